//! The job queue on Redis: a reliable-queue pattern over UBackup's plain lists.
//!
//! Producers LPUSH jobs onto priority lists (UBackup's `redis_queue`). A node takes the oldest
//! job of the first non-empty list and, **in the same Lua script**, records it in its in-flight
//! hash `<prefix>:inflight:<node>`. The job leaves that hash only in the script that publishes
//! its result (or puts it back, or dead-letters it), so there is no moment at which a crash
//! can drop it:
//!
//! ```text
//!  level1 ─┐  take.lua (RPOP + HSET)    finish.lua (HDEL + LPUSH result)
//!  low   ──┼──────────────────────────► inflight:<node> ─────────────────────► message
//!          │◄──────────────── requeue.lua (HDEL + RPUSH) ──┘ └── dead.lua ──► <prefix>:dead
//! ```
//!
//! * A restarted node requeues its own in-flight jobs ([`JobQueue::in_flight`] +
//!   [`JobQueue::requeue`]).
//! * Every node writes `<prefix>:node:<id>` (a hash with a TTL, the lease) and registers in
//!   the set `<prefix>:nodes`. A node whose heartbeat key has expired is dead: any other node
//!   requeues its in-flight jobs. The scripts delete the in-flight entry first and act only
//!   if it was there, so two reapers (or a reaper and a slow owner) never both act on a job.
//! * Requeued jobs go back to the end of their list that is taken next (RPUSH), so they keep
//!   their place in line.
//! * When the result list is on the queue's Redis, publishing the result and dropping the
//!   in-flight entry are one script: exactly one result per job. On a separate Redis the
//!   result is pushed first; a crash between the two steps can repeat a result (same job id).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use redis::{AsyncCommands, Script};
use ubackup_messages::NodeHeartbeat;
use ubackup_redis_ha::{Durability, HaConnection, HaError, Options};

use crate::config::{QueueConfig, ResultsConfig};

/// Why a queue operation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A Redis failure (connection lost, script error, wrong key type).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Another queue implementation's failure, in its own words.
    #[error("queue: {0}")]
    Other(String),
    /// No master, or a write that no replica confirmed (see `[redis_sentinel]`).
    #[error("redis: {0}")]
    Ha(#[from] HaError),
}

/// A job this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Its field in the in-flight hash.
    pub field: String,
    /// The list it came from.
    pub list: String,
    /// When it was taken (epoch ms).
    pub taken_ms: i64,
    /// The message as it sat in the list.
    pub raw: Vec<u8>,
}

/// The job queue as the node sees it: the reliable-queue moves, the node registry and the
/// heartbeat. The node's domain code is written against this trait, never against a Redis
/// type; [`RedisQueue`] is the production adapter.
pub trait JobQueue: Send + Sync + 'static {
    /// Takes the oldest job of the first list that has one into this node's in-flight hash,
    /// passing over waiting messages equal to one in `skip` (jobs this node put back because
    /// they do not fit on its disk now; they keep their place for other nodes).
    fn take(
        &self,
        now_ms: i64,
        skip: &[Vec<u8>],
    ) -> impl Future<Output = Result<Option<Taken>, QueueError>> + Send;
    /// Publishes `result` (and a dead-letter entry) and releases the job; false when the job
    /// was no longer held by this node.
    fn finish(
        &self,
        t: &Taken,
        result: &[u8],
        dead: Option<&[u8]>,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;
    /// Puts a job held by `node` back at the head of its list, or dead-letters it.
    fn requeue(
        &self,
        node: &str,
        t: &Taken,
        message: &[u8],
        dead_letter: bool,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;
    /// The jobs `node` holds, oldest first.
    fn in_flight(&self, node: &str) -> impl Future<Output = Result<Vec<Taken>, QueueError>> + Send;
    /// Nodes registered as possibly holding jobs, and whether each heartbeat is alive.
    fn nodes(&self) -> impl Future<Output = Result<Vec<(String, bool)>, QueueError>> + Send;
    /// Drops `node` from the registry if it holds nothing.
    fn forget_node_if_idle(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Another process's heartbeat under this node id, if one is alive: (host, pid).
    fn live_owner(&self) -> impl Future<Output = Result<Option<(String, i64)>, QueueError>> + Send;
    /// Writes the heartbeat with the lease as its lifetime, and registers the node.
    fn heartbeat(&self, hb: &NodeHeartbeat) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// The operator's control hash of this node.
    fn control(&self) -> impl Future<Output = Result<HashMap<String, String>, QueueError>> + Send;
    /// Removes the heartbeat (clean shutdown with nothing in flight).
    fn clear_heartbeat(&self) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Lengths of every job list, then of the dead-letter list.
    fn lengths(&self) -> impl Future<Output = Result<Vec<(String, u64)>, QueueError>> + Send;
    /// The state of the connection to the queue's Redis (master, failovers followed), for
    /// metrics; None for a queue that has none.
    fn redis_status(&self) -> Option<ubackup_redis_ha::Status> {
        None
    }
}

/// KEYS: inflight, seq, nodes, lists... ARGV: node id, taken_ms, then messages to pass over.
/// With nothing to pass over this is one RPOP per list. Otherwise the oldest `#skip + 1`
/// messages of each list are looked at (one of them cannot be passed over unless messages
/// repeat), and the oldest one not passed over is removed by value (LREM from the tail).
const TAKE: &str = r#"
local skip = {}
local nskip = 0
for j = 3, #ARGV do
  skip[ARGV[j]] = true
  nskip = nskip + 1
end
for i = 4, #KEYS do
  local raw = false
  if nskip == 0 then
    raw = redis.call('RPOP', KEYS[i])
  else
    local oldest = redis.call('LRANGE', KEYS[i], -(nskip + 1), -1)
    for k = #oldest, 1, -1 do
      if not skip[oldest[k]] then
        raw = oldest[k]
        redis.call('LREM', KEYS[i], -1, raw)
        break
      end
    end
  end
  if raw then
    local seq = redis.call('INCR', KEYS[2])
    local field = ARGV[1] .. ':' .. seq
    redis.call('HSET', KEYS[1], field, KEYS[i] .. '\n' .. ARGV[2] .. '\n' .. raw)
    redis.call('SADD', KEYS[3], ARGV[1])
    return {field, KEYS[i], raw}
  end
end
return false
"#;

/// KEYS: inflight, results, dead. ARGV: field, result ('' = none), dead entry ('' = none).
const FINISH: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  if ARGV[2] ~= '' then redis.call('LPUSH', KEYS[2], ARGV[2]) end
  if ARGV[3] ~= '' then redis.call('LPUSH', KEYS[3], ARGV[3]) end
  return 1
end
return 0
"#;

/// KEYS: inflight, list. ARGV: field, message.
const REQUEUE: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"#;

/// The queue, results and heartbeat keys of one node.
#[derive(Clone)]
pub struct RedisQueue {
    conn: HaConnection,
    results: Option<HaConnection>,
    cfg: QueueConfig,
    results_list: String,
    node_id: String,
    take: Script,
    finish: Script,
    requeue: Script,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("queue", &self.cfg.redis)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

async fn connect(target: ubackup_redis_ha::Target) -> Result<HaConnection, QueueError> {
    let opts = Options {
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(10),
        ..Options::default()
    };
    Ok(HaConnection::connect(target, opts).await?)
}

impl RedisQueue {
    /// Connects to the queue's Redis, and to the results' if it is another one.
    pub async fn connect(
        cfg: &QueueConfig,
        results: &ResultsConfig,
        node_id: &str,
    ) -> Result<RedisQueue, QueueError> {
        let conn = connect(cfg.ha.target(&cfg.redis.0)).await?;
        let results_conn = if results.redis == cfg.redis {
            None
        } else {
            let direct = ubackup_redis_ha::Target::Direct(results.redis.0.clone());
            Some(connect(direct).await?)
        };
        Ok(RedisQueue {
            conn,
            results: results_conn,
            cfg: cfg.clone(),
            results_list: results.list.clone(),
            node_id: node_id.to_string(),
            take: Script::new(TAKE),
            finish: Script::new(FINISH),
            requeue: Script::new(REQUEUE),
        })
    }

    fn key(&self, what: &str, node: &str) -> String {
        format!("{}:{what}:{node}", self.cfg.key_prefix)
    }

    /// This node's in-flight hash.
    pub fn inflight_key(&self, node: &str) -> String {
        self.key("inflight", node)
    }

    /// A node's heartbeat hash.
    pub fn heartbeat_key(&self, node: &str) -> String {
        ubackup_messages::heartbeat_key(&self.cfg.key_prefix, node)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.cfg.key_prefix)
    }

    fn durability(&self) -> Durability {
        self.cfg.ha.durability
    }

    /// The queue connection's state, for the heartbeat and metrics.
    pub fn redis_status(&self) -> ubackup_redis_ha::Status {
        self.conn.status()
    }
}

impl JobQueue for RedisQueue {
    fn redis_status(&self) -> Option<ubackup_redis_ha::Status> {
        Some(self.conn.status())
    }

    /// Takes the oldest job of the first non-empty list into this node's in-flight hash.
    async fn take(&self, now_ms: i64, skip: &[Vec<u8>]) -> Result<Option<Taken>, QueueError> {
        let mut inv = self.take.prepare_invoke();
        inv.key(self.inflight_key(&self.node_id))
            .key(format!("{}:seq", self.cfg.key_prefix))
            .key(self.nodes_key());
        for l in &self.cfg.lists {
            inv.key(l);
        }
        inv.arg(&self.node_id).arg(now_ms);
        for m in skip {
            inv.arg(m.as_slice());
        }
        let mut conn = self.conn.clone();
        let r: Option<(String, String, Vec<u8>)> = inv.invoke_async(&mut conn).await?;
        if r.is_some() {
            tracing::debug!(master = ?self.conn.status().master, "job taken");
        }
        Ok(r.map(|(field, list, raw)| Taken {
            field,
            list,
            taken_ms: now_ms,
            raw,
        }))
    }

    /// Publishes `result` (and a dead-letter entry), and releases the job, atomically when
    /// results share the queue's Redis. Returns false when the job was no longer held by
    /// this node (its lease lapsed and another node requeued it): the result was then not
    /// published, so that the requeued copy reports once.
    async fn finish(
        &self,
        t: &Taken,
        result: &[u8],
        dead: Option<&[u8]>,
    ) -> Result<bool, QueueError> {
        // The result and the release are confirmed by WAIT on the socket they went out on:
        // an unconfirmed finish is an error, and the caller repeats it. Repeated after a
        // failover that lost it, it runs again on the new master (where the job is still
        // held); repeated when it was not lost, the job is no longer held (Ok(false)).
        let mut conn = self.conn.pinned().await?;
        let held = match &self.results {
            None => {
                let held = self
                    .finish
                    .key(self.inflight_key(&self.node_id))
                    .key(&self.results_list)
                    .key(&self.cfg.dead_letter)
                    .arg(&t.field)
                    .arg(result)
                    .arg(dead.unwrap_or_default())
                    .invoke_async::<i64>(&mut conn)
                    .await?;
                conn.confirm(self.durability()).await?;
                held
            }
            Some(results) => {
                let held: bool = conn
                    .hexists(self.inflight_key(&self.node_id), &t.field)
                    .await?;
                if !held {
                    return Ok(false);
                }
                let mut rc = results.clone();
                let _: i64 = rc.lpush(&self.results_list, result).await?;
                self.finish
                    .key(self.inflight_key(&self.node_id))
                    .key(&self.results_list)
                    .key(&self.cfg.dead_letter)
                    .arg(&t.field)
                    .arg("")
                    .arg(dead.unwrap_or_default())
                    .invoke_async::<i64>(&mut conn)
                    .await?
            }
        };
        Ok(held == 1)
    }

    /// Puts a job held by `node` back at the head of its list (or, for a dead-lettered
    /// one, `to` = the dead-letter list), if it is still held.
    async fn requeue(
        &self,
        node: &str,
        t: &Taken,
        message: &[u8],
        dead_letter: bool,
    ) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        if dead_letter {
            let n: i64 = self
                .finish
                .key(self.inflight_key(node))
                .key(&self.results_list)
                .key(&self.cfg.dead_letter)
                .arg(&t.field)
                .arg("")
                .arg(message)
                .invoke_async(&mut conn)
                .await?;
            return Ok(n == 1);
        }
        let n: i64 = self
            .requeue
            .key(self.inflight_key(node))
            .key(&t.list)
            .arg(&t.field)
            .arg(message)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// The jobs `node` holds.
    async fn in_flight(&self, node: &str) -> Result<Vec<Taken>, QueueError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, Vec<u8>> = conn.hgetall(self.inflight_key(node)).await?;
        let mut out = Vec::with_capacity(all.len());
        for (field, v) in all {
            // "<list>\n<taken_ms>\n<raw>", written by take.lua.
            let mut parts = v.splitn(3, |&b| b == b'\n');
            let (Some(list), Some(ms), Some(raw)) = (parts.next(), parts.next(), parts.next())
            else {
                tracing::warn!(node, field, "malformed in-flight entry; left in place");
                continue;
            };
            out.push(Taken {
                field,
                list: String::from_utf8_lossy(list).into_owned(),
                taken_ms: std::str::from_utf8(ms)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                raw: raw.to_vec(),
            });
        }
        out.sort_by_key(|t| t.taken_ms);
        Ok(out)
    }

    /// Nodes registered as possibly holding jobs, and whether each heartbeat is alive.
    async fn nodes(&self) -> Result<Vec<(String, bool)>, QueueError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(self.nodes_key()).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let alive: bool = conn.exists(self.heartbeat_key(&id)).await?;
            out.push((id, alive));
        }
        Ok(out)
    }

    /// Drops `node` from the registry if it holds nothing.
    async fn forget_node_if_idle(&self, node: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let n: i64 = conn.hlen(self.inflight_key(node)).await?;
        if n == 0 {
            let _: i64 = conn.srem(self.nodes_key(), node).await?;
        }
        Ok(())
    }

    /// Another process's heartbeat under this node id, if one is alive: (host, pid).
    async fn live_owner(&self) -> Result<Option<(String, i64)>, QueueError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> =
            conn.hgetall(self.heartbeat_key(&self.node_id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        // A malformed pid reads as 0 (no process), as it always has.
        let hb = NodeHeartbeat::parse(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap_or_else(|e| *e.salvaged);
        Ok(Some((hb.host, i64::from(hb.pid))))
    }

    /// Writes the heartbeat hash with the lease as its TTL, and registers the node.
    async fn heartbeat(&self, hb: &NodeHeartbeat) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let key = self.heartbeat_key(&self.node_id);
        let _: () = redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &hb.to_fields())
            .ignore()
            .pexpire(&key, self.cfg.lease.as_millis() as i64)
            .ignore()
            .sadd(self.nodes_key(), &self.node_id)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The operator's control hash of this node (`<prefix>:control:<node>`, written by the
    /// dashboard; see `node::control`).
    async fn control(&self) -> Result<HashMap<String, String>, QueueError> {
        let mut conn = self.conn.clone();
        Ok(conn.hgetall(self.key("control", &self.node_id)).await?)
    }

    /// Removes the heartbeat (clean shutdown with nothing in flight).
    async fn clear_heartbeat(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(self.heartbeat_key(&self.node_id)).await?;
        self.forget_node_if_idle(&self.node_id).await
    }

    /// Lengths of every job list, then of the dead-letter list.
    async fn lengths(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for l in &self.cfg.lists {
            pipe.llen(l);
        }
        pipe.llen(&self.cfg.dead_letter);
        let lens: Vec<u64> = pipe.query_async(&mut conn).await?;
        let names = self
            .cfg
            .lists
            .iter()
            .cloned()
            .chain(std::iter::once(self.cfg.dead_letter.clone()));
        Ok(names.zip(lens).collect())
    }
}
