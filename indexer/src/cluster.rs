//! Cluster status read from each cluster's Redis: node heartbeats (`<prefix>:node:<id>`,
//! written by `ubackup-puller run`), every job list's length (`level1` included) and the age of
//! its oldest job, the dead-letter list, and agent heartbeats (`<prefix>:agent:<server_id>`).
//! This replaces UBackup's cron reporters (compat §A.7).

pub mod control;

use std::collections::BTreeMap;

use serde::Serialize;
use ubackup_messages::{heartbeat_key, NodeHeartbeat};
use ubackup_redis_ha::HaConnection;

use crate::config::ClusterConfig;

/// One node, from its heartbeat hash.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node id.
    pub node_id: String,
    /// Address.
    pub ip: String,
    /// Host name.
    pub host: String,
    /// Heartbeat time (ms).
    pub updated_ms: i64,
    /// Free bytes under the backup root.
    pub free_bytes: u64,
    /// Size of that file system.
    pub total_bytes: u64,
    /// Whether it stopped taking jobs (disk reserve).
    pub paused: bool,
    /// Why.
    pub paused_reason: String,
    /// Busy workers.
    pub busy_workers: u64,
    /// Workers.
    pub workers: u64,
    /// Bytes written per second over the last period.
    pub bytes_per_second: u64,
    /// Jobs done.
    pub done: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Whether its heartbeat hash exists (it expires with the node's lease).
    pub alive: bool,
}

/// One job list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueueStatus {
    /// List name.
    pub list: String,
    /// Length.
    pub length: i64,
    /// create time of its oldest job (ms), when it can be read.
    pub oldest_ms: Option<i64>,
}

/// One cluster.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Name.
    pub name: String,
    /// Whether its Redis answered.
    pub reachable: bool,
    /// The error when it did not.
    pub error: Option<String>,
    /// Nodes (heartbeating or expected).
    pub nodes: Vec<NodeStatus>,
    /// Job lists, then the dead-letter list.
    pub queues: Vec<QueueStatus>,
    /// Dead-letter list length.
    pub dead_letters: i64,
    /// Of the classified entries, the illegal messages (a node refused them; each has its
    /// `illegal` alert), as opposed to jobs that exhausted their requeues.
    pub dead_illegal: i64,
    /// Entries past the newest [`DEAD_SCAN`], not classified.
    pub dead_unread: i64,
    /// Agents seen: server_id → heartbeat time (ms; 0 when the hash has no time).
    pub agents: BTreeMap<String, i64>,
    /// Capacity summed over nodes (bytes).
    pub total_bytes: u64,
    /// Used, summed (bytes).
    pub used_bytes: u64,
}

impl NodeStatus {
    /// A node from its heartbeat hash (empty: expired). A malformed hash is logged and shown
    /// with its bad fields at zero and its long ones cut.
    pub fn from_heartbeat(node_id: String, hash: &BTreeMap<String, String>) -> NodeStatus {
        let hb = NodeHeartbeat::parse(hash.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap_or_else(|e| {
                tracing::warn!(node = %node_id, "{e}");
                *e.salvaged
            });
        NodeStatus {
            alive: !hash.is_empty(),
            ip: hb.ip,
            host: hb.host,
            updated_ms: hb.updated_ms,
            free_bytes: hb.free_bytes,
            total_bytes: hb.total_bytes,
            paused: hb.paused,
            paused_reason: hb.paused_reason,
            busy_workers: hb.busy_workers,
            workers: hb.workers,
            bytes_per_second: hb.bytes_per_second,
            done: hb.done,
            failed: hb.failed,
            node_id,
        }
    }
}

fn num<T: std::str::FromStr + Default>(h: &BTreeMap<String, String>, k: &str) -> T {
    h.get(k).and_then(|v| v.parse().ok()).unwrap_or_default()
}

/// The creation time of a queued job (ms): v1 `create_time_ms`, UBackup's `create_time` (s),
/// either inside a requeue wrapper.
fn job_time(raw: &[u8]) -> Option<i64> {
    let d = ubackup_messages::Delivery::unwrap(raw);
    let v: serde_json::Value = serde_json::from_slice(&d.job).ok()?;
    if let Some(ms) = v.get("create_time_ms").and_then(|x| x.as_i64()) {
        return Some(ms);
    }
    let t = v.get("create_time")?;
    let s = t.as_i64().or_else(|| t.as_str()?.trim().parse().ok())?;
    // UBackup's client sends seconds.
    Some(if s < 100_000_000_000 { s * 1000 } else { s })
}

async fn scan(conn: &mut HaConnection, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut cursor: u64 = 0;
    let mut out = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        out.extend(keys);
        if next == 0 || out.len() > 1_000_000 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// Reads one cluster's status.
pub async fn read(
    cfg: &ClusterConfig,
    conn: &mut HaConnection,
) -> redis::RedisResult<ClusterStatus> {
    let p = &cfg.key_prefix;
    let mut ids: Vec<String> = scan(conn, &format!("{p}:node:*"))
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix(&format!("{p}:node:")).map(String::from))
        .collect();
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{p}:nodes"))
        .query_async(conn)
        .await?;
    ids.extend(members);
    ids.extend(cfg.nodes.iter().cloned());
    ids.sort();
    ids.dedup();
    let mut nodes = Vec::new();
    for id in ids {
        let h: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(heartbeat_key(p, &id))
            .query_async(conn)
            .await?;
        nodes.push(NodeStatus::from_heartbeat(id, &h));
    }
    let mut queues = Vec::new();
    for list in &cfg.lists {
        let length: i64 = redis::cmd("LLEN").arg(list).query_async(conn).await?;
        let oldest: Option<Vec<u8>> = redis::cmd("LINDEX")
            .arg(list)
            .arg(-1)
            .query_async(conn)
            .await?;
        queues.push(QueueStatus {
            list: list.clone(),
            length,
            oldest_ms: oldest.as_deref().and_then(job_time),
        });
    }
    let dead_list = format!("{p}:dead");
    let dead_letters: i64 = redis::cmd("LLEN").arg(&dead_list).query_async(conn).await?;
    let (dead_illegal, dead_unread) = classify_dead(conn, &dead_list, dead_letters).await?;
    queues.push(QueueStatus {
        list: dead_list,
        length: dead_letters,
        oldest_ms: None,
    });
    let mut agents = BTreeMap::new();
    for k in scan(conn, &format!("{p}:agent:*")).await? {
        let Some(server) = k.strip_prefix(&format!("{p}:agent:")) else {
            continue;
        };
        let h: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(&k)
            .query_async(conn)
            .await
            .unwrap_or_default();
        agents.insert(server.to_string(), num::<i64>(&h, "updated_ms"));
    }
    let total_bytes = nodes.iter().map(|n| n.total_bytes).sum();
    let used_bytes = nodes
        .iter()
        .map(|n| n.total_bytes.saturating_sub(n.free_bytes))
        .sum();
    Ok(ClusterStatus {
        name: cfg.name.clone(),
        reachable: true,
        error: None,
        nodes,
        queues,
        dead_letters,
        dead_illegal,
        dead_unread,
        agents,
        total_bytes,
        used_bytes,
    })
}

/// Dead-list entries read per evaluation at most (the newest; pages of [`DEAD_PAGE`]).
pub const DEAD_SCAN: i64 = 10_000;
const DEAD_PAGE: i64 = 500;

/// A dead-list entry as the node writes it (`lease::dead_letter_entry`): only its reason.
#[derive(serde::Deserialize)]
struct DeadEntry {
    #[serde(default)]
    reason: String,
}

/// Counts the illegal messages among the newest [`DEAD_SCAN`] entries of the dead list (a
/// node's reason starts with `illegal message: `); returns them and how many entries were
/// past the scan.
async fn classify_dead(
    conn: &mut HaConnection,
    list: &str,
    len: i64,
) -> Result<(i64, i64), redis::RedisError> {
    let scan = len.min(DEAD_SCAN);
    let mut illegal = 0;
    let mut at = 0;
    while at < scan {
        let end = (at + DEAD_PAGE).min(scan) - 1;
        let page: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(list)
            .arg(at)
            .arg(end)
            .query_async(conn)
            .await?;
        if page.is_empty() {
            break; // the list shrank meanwhile
        }
        at += page.len() as i64;
        illegal += page
            .iter()
            .filter(|e| {
                serde_json::from_slice::<DeadEntry>(e)
                    .is_ok_and(|d| d.reason.starts_with(ubackup_messages::ILLEGAL_PREFIX))
            })
            .count() as i64;
    }
    Ok((illegal, len.saturating_sub(at)))
}

/// Connections to every configured cluster, opened lazily and kept.
#[derive(Default)]
pub struct Clusters {
    cfgs: Vec<ClusterConfig>,
    conns: tokio::sync::Mutex<BTreeMap<String, HaConnection>>,
    /// A Redis URL reached through Sentinel, and how.
    sentinel: Option<(String, ubackup_redis_ha::HaSettings)>,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clusters")
            .field("cfgs", &self.cfgs)
            .finish_non_exhaustive()
    }
}

impl Clusters {
    /// For these clusters.
    pub fn new(cfgs: Vec<ClusterConfig>) -> Clusters {
        Clusters {
            cfgs,
            conns: tokio::sync::Mutex::new(BTreeMap::new()),
            sentinel: None,
        }
    }

    /// Clusters whose `redis` is `url` are reached through `ha`'s Sentinel set.
    pub fn with_sentinel(mut self, url: &str, ha: ubackup_redis_ha::HaSettings) -> Clusters {
        if ha.sentinel.is_some() {
            self.sentinel = Some((url.to_string(), ha));
        }
        self
    }

    /// How cluster `c`'s Redis is reached.
    fn target(&self, c: &ClusterConfig) -> ubackup_redis_ha::Target {
        match &self.sentinel {
            Some((url, ha)) if *url == c.redis => ha.target(&c.redis),
            _ => ubackup_redis_ha::Target::Direct(c.redis.clone()),
        }
    }

    /// Every cluster's status; an unreachable one is reported as such, not as an error.
    pub async fn status(&self) -> Vec<ClusterStatus> {
        let mut out = Vec::new();
        for c in &self.cfgs {
            let r = async {
                let mut conn = {
                    let mut conns = self.conns.lock().await;
                    match conns.get(&c.name) {
                        Some(x) => x.clone(),
                        None => {
                            let x = crate::ingest::redis::connect_to(self.target(c)).await?;
                            conns.insert(c.name.clone(), x.clone());
                            x
                        }
                    }
                };
                tokio::time::timeout(std::time::Duration::from_secs(15), read(c, &mut conn))
                    .await
                    .map_err(|_| {
                        redis::RedisError::from((redis::ErrorKind::Io, "cluster read timed out"))
                    })?
            }
            .await;
            out.push(match r {
                Ok(s) => s,
                Err(e) => ClusterStatus {
                    name: c.name.clone(),
                    reachable: false,
                    error: Some(e.to_string()),
                    nodes: Vec::new(),
                    queues: Vec::new(),
                    dead_letters: 0,
                    dead_illegal: 0,
                    dead_unread: 0,
                    agents: BTreeMap::new(),
                    total_bytes: 0,
                    used_bytes: 0,
                },
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_written_heartbeat_is_shown_as_written() {
        let hb = NodeHeartbeat {
            node_id: "bk-01".into(),
            ip: "10.0.0.7".into(),
            host: "bk01".into(),
            updated_ms: 1_765_000_000_000,
            free_bytes: 3 << 30,
            total_bytes: 50 << 30,
            paused: true,
            paused_reason: "free 3 GiB < reserve 50 GiB".into(),
            busy_workers: 2,
            workers: 4,
            bytes_per_second: 1000,
            done: 7,
            failed: 1,
            ..NodeHeartbeat::default()
        };
        let hash: BTreeMap<String, String> = hb.to_fields().into_iter().collect();
        let n = NodeStatus::from_heartbeat("bk-01".into(), &hash);
        assert_eq!(
            n,
            NodeStatus {
                node_id: "bk-01".into(),
                ip: "10.0.0.7".into(),
                host: "bk01".into(),
                updated_ms: 1_765_000_000_000,
                free_bytes: 3 << 30,
                total_bytes: 50 << 30,
                paused: true,
                paused_reason: "free 3 GiB < reserve 50 GiB".into(),
                busy_workers: 2,
                workers: 4,
                bytes_per_second: 1000,
                done: 7,
                failed: 1,
                alive: true,
            }
        );
    }

    #[test]
    fn a_malformed_or_expired_heartbeat_still_shows_the_node() {
        let hash: BTreeMap<String, String> = [
            ("updated_ms", "later"),
            ("workers", "-4"),
            ("done", "12"),
            ("paused", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let n = NodeStatus::from_heartbeat("n1".into(), &hash);
        assert!(n.alive && n.paused);
        assert_eq!((n.updated_ms, n.workers, n.done), (0, 0, 12));
        let gone = NodeStatus::from_heartbeat("n2".into(), &BTreeMap::new());
        assert!(!gone.alive);
        assert_eq!(gone.node_id, "n2");
    }
}
