//! [`Intake`] on Redis: UBackup's `message` list and this indexer's processing list.

use std::time::Duration;

use async_trait::async_trait;
use ubackup_redis_ha::{HaConnection, Options, Target};

use super::{Intake, IntakeError, Outcome, Settled};

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
    conn: HaConnection,
    list: String,
    processing: String,
    dead: String,
    indexer: String,
    take: redis::Script,
    forward: Option<String>,
    settle: redis::Script,
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
pub async fn connect(url: &str) -> Result<HaConnection, redis::RedisError> {
    connect_to(Target::Direct(url.to_string())).await
}

/// A connection to `target` (the master of a Sentinel set, followed across failovers, or
/// one server), reconnecting by itself with bounded backoff.
pub async fn connect_to(target: Target) -> Result<HaConnection, redis::RedisError> {
    let opts = Options {
        connect_timeout: Duration::from_secs(5),
        // Above the longest BLMOVE wait of `take`.
        response_timeout: Duration::from_secs(10),
        ..Options::default()
    };
    HaConnection::connect(target, opts)
        .await
        .map_err(|e| match e {
            ubackup_redis_ha::HaError::Redis(e) => e,
            other => redis::RedisError::from((redis::ErrorKind::Io, "redis", other.to_string())),
        })
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
        Self::connect_to(
            Target::Direct(url.to_string()),
            list,
            processing,
            dead,
            indexer,
        )
        .await
    }

    /// Like [`RedisIntake::connect`], to `target` (through Sentinel when it names one).
    pub async fn connect_to(
        target: Target,
        list: &str,
        processing: &str,
        dead: &str,
        indexer: &str,
    ) -> Result<RedisIntake, IntakeError> {
        Ok(RedisIntake {
            conn: connect_to(target).await.map_err(err)?,
            list: list.into(),
            processing: processing.into(),
            dead: dead.into(),
            indexer: indexer.into(),
            take: redis::Script::new(TAKE),
            forward: None,
            settle: redis::Script::new(SETTLE),
        })
    }

    /// The connection's state (master, failovers followed), for metrics.
    pub fn redis_status(&self) -> ubackup_redis_ha::Status {
        self.conn.status()
    }

    /// A handle on the connection (it follows the master as the intake's does), for
    /// `/metrics` to read its state at each scrape.
    pub fn connection(&self) -> HaConnection {
        self.conn.clone()
    }

    /// Copies every consumed pull result that `to_es.py` reads to `list` (see
    /// `ResultsConfig::forward_list` and [`super::forwardable`]).
    pub fn forwarding_to(mut self, list: Option<String>) -> RedisIntake {
        self.forward = list;
        self
    }
}

/// KEYS[1] processing, KEYS[2] dead letters, KEYS[3] (optional) forward list; ARGV holds pairs
/// (message, action), oldest first. For each pair: LREM one entry with exactly those bytes,
/// scanning from the right (the oldest end, where a settled batch sits); only if one was
/// removed, act: `d<entry>` LPUSHes the dead letter, `f` LPUSHes the message onto the forward
/// list (oldest first, so a consumer reading from the right gets them in order), `k` nothing.
/// One script, so a dead letter or a forward copy exists exactly when its entry left flight,
/// however the indexer or Redis stops; a second run for the same messages (its first reply
/// was lost) finds nothing to remove and pushes nothing. Returns how many entries it removed.
const SETTLE: &str = r"
local removed = 0
for i = 1, #ARGV - 1, 2 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
    removed = removed + 1
    local action = ARGV[i + 1]
    local tag = string.sub(action, 1, 1)
    if tag == 'd' then
      redis.call('LPUSH', KEYS[2], string.sub(action, 2))
    elseif tag == 'f' and KEYS[3] then
      redis.call('LPUSH', KEYS[3], ARGV[i])
    end
  end
end
return removed
";

/// How much of a malformed message its dead-letter entry keeps.
pub const DEAD_LETTER_EXCERPT: usize = 64 * 1024;

impl RedisIntake {
    /// The dead-letter entry of `raw`: its first [`DEAD_LETTER_EXCERPT`] bytes and its size.
    /// The whole message would go into the settle script twice (raw and escaped), so one
    /// huge message of control bytes could pass Redis's argument limit and hold the batch.
    fn dead_entry(&self, raw: &[u8], reason: &str) -> String {
        let text = String::from_utf8_lossy(raw);
        serde_json::json!({
            "reason": reason,
            "message": ubackup_messages::truncate_str(&text, DEAD_LETTER_EXCERPT),
            "bytes": raw.len(),
            "indexer": self.indexer,
            "at_ms": crate::clock::Clock::now_ms(&crate::clock::SystemClock),
        })
        .to_string()
    }
}

#[async_trait]
impl Intake for RedisIntake {
    async fn in_flight(&mut self, max: usize) -> Result<Vec<Vec<u8>>, IntakeError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // The oldest are at the right.
        let from = -i64::try_from(max).unwrap_or(i64::MAX);
        let mut v: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&self.processing)
            .arg(from)
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

    async fn done(&mut self, settled: &[Settled<'_>]) -> Result<usize, IntakeError> {
        if settled.is_empty() {
            return Ok(0);
        }
        let mut inv = self.settle.key(&self.processing);
        inv.key(&self.dead);
        if let Some(forward) = &self.forward {
            inv.key(forward);
        }
        for s in settled {
            inv.arg(s.raw);
            match s.outcome {
                Outcome::Forward => inv.arg("f"),
                Outcome::Keep => inv.arg("k"),
                Outcome::Dead(reason) => inv.arg(format!("d{}", self.dead_entry(s.raw, reason))),
            };
        }
        let removed: usize = inv.invoke_async(&mut self.conn).await.map_err(err)?;
        Ok(removed)
    }

    async fn backlog(&mut self) -> Result<i64, IntakeError> {
        redis::cmd("LLEN")
            .arg(&self.list)
            .query_async(&mut self.conn)
            .await
            .map_err(err)
    }
}
