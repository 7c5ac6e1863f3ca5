//! Node control written to a cluster's Redis: the hash `<prefix>:control:<node_id>`, which
//! `ubackup-puller run` reads at each heartbeat, applies, and reports back in its heartbeat
//! (`control_seq` and the values it applied). The key sits outside `<prefix>:node:*` so the
//! heartbeat scan never mistakes it for a node.
//!
//! The fields and their meaning are the contract in [`ubackup_messages::control`], shared with
//! the node.

use std::collections::BTreeMap;

use redis::AsyncCommands as _;
use ubackup_messages::control::field;
use ubackup_messages::NodeControl as ControlHash;

use super::Clusters;

pub use ubackup_messages::{control_key, ControlChange};

/// Why a control write failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No cluster by that name.
    #[error("no cluster named {0:?}")]
    UnknownCluster(String),
    /// No node by that id in the cluster (not configured, never seen by its heartbeat).
    #[error("cluster {cluster:?} has no node {node:?}")]
    UnknownNode {
        /// The cluster.
        cluster: String,
        /// The node id asked for.
        node: String,
    },
    /// Its Redis failed.
    #[error("cluster Redis: {0}")]
    Redis(#[from] redis::RedisError),
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
        let mut conn = crate::ingest::redis::connect_to(self.target(cfg)).await?;
        // Only a node the cluster knows (as the nodes page lists them: configured, in the
        // `<prefix>:nodes` set, or with a heartbeat): no control hash for a made-up id.
        let p = &cfg.key_prefix;
        let known = cfg.nodes.iter().any(|n| n == node_id)
            || conn
                .sismember::<_, _, bool>(format!("{p}:nodes"), node_id)
                .await?
            || conn
                .exists::<_, bool>(format!("{p}:node:{node_id}"))
                .await?;
        if !known {
            return Err(ControlError::UnknownNode {
                cluster: cluster.to_string(),
                node: node_id.to_string(),
            });
        }
        let key = control_key(&cfg.key_prefix, node_id);
        let writes = change.writes(by, now_ms);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !writes.delete.is_empty() {
            pipe.hdel(&key, &writes.delete).ignore();
        }
        pipe.hset_multiple(&key, &writes.set).ignore();
        pipe.hincr(&key, field::SEQ, 1).ignore();
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
        let mut conn = crate::ingest::redis::connect_to(self.target(cfg)).await?;
        let mut out = BTreeMap::new();
        for id in node_ids {
            let hash: BTreeMap<String, String> =
                conn.hgetall(control_key(&cfg.key_prefix, id)).await?;
            let desired = (!hash.is_empty())
                .then(|| ControlHash::parse(hash.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
            let hb_key = ubackup_messages::heartbeat_key(&cfg.key_prefix, id);
            let (seq, applied): (Option<i64>, Option<String>) = redis::pipe()
                .hget(&hb_key, field::CONTROL_SEQ)
                .hget(&hb_key, field::CONTROL_APPLIED)
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
    /// The control hash, if the node has one.
    pub desired: Option<ControlHash>,
    /// The `seq` the node applied last.
    pub applied_seq: Option<i64>,
    /// What it applied, as the node describes it.
    pub applied: String,
}

impl NodeControl {
    /// Whether the node has applied the newest change.
    pub fn in_effect(&self) -> bool {
        match &self.desired {
            Some(d) if d.seq != 0 => Some(d.seq) == self.applied_seq,
            _ => true,
        }
    }
}
