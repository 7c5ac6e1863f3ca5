//! [`Intake`] on Redis: UBackup's `message` list and this indexer's processing list.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Intake, IntakeError};

/// Moves up to ARGV[1] messages from the right (oldest) end of KEYS[1] to the left of KEYS[2],
/// atomically, and returns them oldest first.
const TAKE: &str = r"
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not v then break end
  out[#out + 1] = v
end
return out
";

/// The results list and a processing list on one Redis.
pub struct RedisIntake {
    conn: ConnectionManager,
    list: String,
    processing: String,
    dead: String,
    indexer: String,
    take: redis::Script,
}

impl std::fmt::Debug for RedisIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisIntake")
            .field("list", &self.list)
            .field("processing", &self.processing)
            .finish_non_exhaustive()
    }
}

fn err(e: redis::RedisError) -> IntakeError {
    IntakeError(e.to_string())
}

/// A Redis connection that reconnects by itself (with bounded waits).
pub async fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client, cfg).await
}

impl RedisIntake {
    /// Connects. Fails only on a malformed URL or when Redis is unreachable at start.
    pub async fn connect(
        url: &str,
        list: &str,
        processing: &str,
        dead: &str,
        indexer: &str,
    ) -> Result<RedisIntake, IntakeError> {
        Ok(RedisIntake {
            conn: connect(url).await.map_err(err)?,
            list: list.into(),
            processing: processing.into(),
            dead: dead.into(),
            indexer: indexer.into(),
            take: redis::Script::new(TAKE),
        })
    }
}

#[async_trait]
impl Intake for RedisIntake {
    async fn in_flight(&mut self) -> Result<Vec<Vec<u8>>, IntakeError> {
        let mut v: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&self.processing)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn)
            .await
            .map_err(err)?;
        v.reverse();
        Ok(v)
    }

    async fn take(&mut self, max: usize, wait: Duration) -> Result<Vec<Vec<u8>>, IntakeError> {
        let mut out: Vec<Vec<u8>> = self
            .take
            .key(&self.list)
            .key(&self.processing)
            .arg(max)
            .invoke_async(&mut self.conn)
            .await
            .map_err(err)?;
        if out.is_empty() {
            let one: Option<Vec<u8>> = redis::cmd("BLMOVE")
                .arg(&self.list)
                .arg(&self.processing)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(wait.as_secs_f64())
                .query_async(&mut self.conn)
                .await
                .map_err(err)?;
            if let Some(m) = one {
                out.push(m);
            }
        }
        Ok(out)
    }

    async fn done(&mut self, n: usize) -> Result<(), IntakeError> {
        if n == 0 {
            return Ok(());
        }
        // Only this indexer writes its processing list, and the batch is its n rightmost
        // (oldest) entries.
        let stop = -(n as i64) - 1;
        let () = redis::cmd("LTRIM")
            .arg(&self.processing)
            .arg(0)
            .arg(stop)
            .query_async(&mut self.conn)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn dead_letter(&mut self, raw: &[u8], reason: &str) -> Result<(), IntakeError> {
        let entry = serde_json::json!({
            "reason": reason,
            "message": String::from_utf8_lossy(raw),
            "indexer": self.indexer,
            "at_ms": crate::clock::Clock::now_ms(&crate::clock::SystemClock),
        });
        let _: i64 = redis::cmd("LPUSH")
            .arg(&self.dead)
            .arg(entry.to_string())
            .query_async(&mut self.conn)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn backlog(&mut self) -> Result<i64, IntakeError> {
        redis::cmd("LLEN")
            .arg(&self.list)
            .query_async(&mut self.conn)
            .await
            .map_err(err)
    }
}
