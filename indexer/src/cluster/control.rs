//! Node control written to a cluster's Redis: the hash `<prefix>:control:<node_id>`, which
//! `ubackup-puller run` reads at each heartbeat, applies, and reports back in its heartbeat
//! (`control_seq` and the values it applied). The key sits outside `<prefix>:node:*` so the
//! heartbeat scan never mistakes it for a node.
//!
//! Fields (all strings; a missing field means "as configured"):
//! `seq` (increments with every change), `paused` (`1`/`0`), `drain` (`1`/`0`), `reason`,
//! `workers` (count), `bwlimit` (bytes per second, `0` = unlimited), `by`, `at_ms`.

use std::collections::BTreeMap;

use redis::AsyncCommands as _;

use super::Clusters;

/// A change asked for by an operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlChange {
    /// Stop taking jobs (`Some(false)` resumes).
    pub paused: Option<bool>,
    /// Stop taking jobs and let running ones finish (`Some(false)` ends the drain).
    pub drain: Option<bool>,
    /// Why (shown on the node page and in the node's heartbeat).
    pub reason: Option<String>,
    /// Workers (`Some(None)`: back to the configured number).
    pub workers: Option<Option<u32>>,
    /// Bandwidth cap in bytes/s (`Some(Some(0))`: unlimited; `Some(None)`: as configured).
    pub bwlimit: Option<Option<u64>>,
}

/// Why a control write failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No cluster by that name.
    #[error("no cluster named {0:?}")]
    UnknownCluster(String),
    /// Its Redis failed.
    #[error("cluster Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The control key of a node.
pub fn control_key(prefix: &str, node_id: &str) -> String {
    format!("{prefix}:control:{node_id}")
}

impl Clusters {
    /// Writes a change to a node's control hash; returns the hash as it is now.
    pub async fn write_control(
        &self,
        cluster: &str,
        node_id: &str,
        change: &ControlChange,
        by: &str,
        now_ms: i64,
    ) -> Result<BTreeMap<String, String>, ControlError> {
        let cfg = self
            .cfgs
            .iter()
            .find(|c| c.name == cluster)
            .ok_or_else(|| ControlError::UnknownCluster(cluster.to_string()))?;
        let mut conn = crate::ingest::redis::connect(&cfg.redis).await?;
        let key = control_key(&cfg.key_prefix, node_id);
        let mut set: Vec<(&str, String)> =
            vec![("by", by.to_string()), ("at_ms", now_ms.to_string())];
        let mut del: Vec<&str> = Vec::new();
        if let Some(p) = change.paused {
            set.push(("paused", u8::from(p).to_string()));
        }
        if let Some(d) = change.drain {
            set.push(("drain", u8::from(d).to_string()));
        }
        if let Some(r) = &change.reason {
            set.push(("reason", r.clone()));
        }
        match change.workers {
            Some(Some(w)) => set.push(("workers", w.to_string())),
            Some(None) => del.push("workers"),
            None => {}
        }
        match change.bwlimit {
            Some(Some(b)) => set.push(("bwlimit", b.to_string())),
            Some(None) => del.push("bwlimit"),
            None => {}
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !del.is_empty() {
            pipe.hdel(&key, del).ignore();
        }
        pipe.hset_multiple(&key, &set).ignore();
        pipe.hincr(&key, "seq", 1).ignore();
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(conn.hgetall(&key).await?)
    }

    /// Every node's control hash in a cluster, with what its heartbeat says it applied.
    pub async fn read_controls(
        &self,
        cluster: &str,
        node_ids: &[String],
    ) -> Result<BTreeMap<String, NodeControl>, ControlError> {
        let cfg = self
            .cfgs
            .iter()
            .find(|c| c.name == cluster)
            .ok_or_else(|| ControlError::UnknownCluster(cluster.to_string()))?;
        let mut conn = crate::ingest::redis::connect(&cfg.redis).await?;
        let mut out = BTreeMap::new();
        for id in node_ids {
            let desired: BTreeMap<String, String> =
                conn.hgetall(control_key(&cfg.key_prefix, id)).await?;
            let hb_key = format!("{}:node:{id}", cfg.key_prefix);
            let (seq, applied): (Option<i64>, Option<String>) = redis::pipe()
                .hget(&hb_key, "control_seq")
                .hget(&hb_key, "control_applied")
                .query_async(&mut conn)
                .await?;
            out.insert(
                id.clone(),
                NodeControl {
                    desired,
                    applied_seq: seq,
                    applied: applied.unwrap_or_default(),
                },
            );
        }
        Ok(out)
    }
}

/// A node's control: what was asked, and what its last heartbeat reports applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeControl {
    /// The control hash.
    pub desired: BTreeMap<String, String>,
    /// The `seq` the node applied last.
    pub applied_seq: Option<i64>,
    /// What it applied, as the node describes it.
    pub applied: String,
}

impl NodeControl {
    /// Whether the node has applied the newest change.
    pub fn in_effect(&self) -> bool {
        let want: Option<i64> = self.desired.get("seq").and_then(|s| s.parse().ok());
        want.is_none() || want == self.applied_seq
    }
}
