//! Operator control of a node: the Redis hash `<prefix>:control:<node_id>` that the indexer's
//! nodes page writes ([`ControlChange::writes`]) and `ubackup-puller run` reads at every
//! heartbeat ([`NodeControl::parse`]), and the heartbeat fields in which the node reports what
//! it applied. Both daemons use these names and rules, so neither can drift from the other.
//!
//! Every field is a string, and a missing one means "as configured": `seq` (bumped by every
//! change), `paused` and `drain` (`1`/`0`), `reason`, `workers`, `bwlimit` (bytes per second,
//! `0` = no cap), `by`, `at_ms`. The key sits outside `<prefix>:node:*`, so a heartbeat scan
//! never mistakes it for a node.

/// Field names of the control hash and of the node's heartbeat reply.
pub mod field {
    /// Change counter, bumped by every write.
    pub const SEQ: &str = "seq";
    /// `1`: take no jobs.
    pub const PAUSED: &str = "paused";
    /// `1`: take no jobs, let running ones finish.
    pub const DRAIN: &str = "drain";
    /// Why (free text, shown on the nodes page and in the heartbeat).
    pub const REASON: &str = "reason";
    /// Workers, when overridden.
    pub const WORKERS: &str = "workers";
    /// Bandwidth cap in bytes/s (`0`: none), when overridden.
    pub const BWLIMIT: &str = "bwlimit";
    /// Who wrote the change.
    pub const BY: &str = "by";
    /// When (ms since the epoch).
    pub const AT_MS: &str = "at_ms";
    /// Heartbeat: the `seq` the node applied last.
    pub const CONTROL_SEQ: &str = "control_seq";
    /// Heartbeat: what the node applied, for people.
    pub const CONTROL_APPLIED: &str = "control_applied";
    /// Heartbeat: `1` when draining with nothing running.
    pub const DRAINED: &str = "drained";
}

/// Most workers the control hash may set.
pub const MAX_WORKERS: usize = 256;
/// Longest reason kept (characters).
pub const MAX_REASON: usize = 200;

/// The control key of a node.
pub fn control_key(prefix: &str, node_id: &str) -> String {
    format!("{prefix}:control:{node_id}")
}

/// What a control hash asks for, as a node reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeControl {
    /// Change counter (0: no hash).
    pub seq: i64,
    /// Take no jobs.
    pub paused: bool,
    /// Take no jobs, let running ones finish.
    pub drain: bool,
    /// Why (control characters removed, at most [`MAX_REASON`] characters).
    pub reason: String,
    /// Workers, when overridden (clamped to 1..=[`MAX_WORKERS`]).
    pub workers: Option<usize>,
    /// Bandwidth cap in bytes/s (0 = none), when overridden.
    pub bwlimit: Option<u64>,
}

impl NodeControl {
    /// Reads a hash's fields. Malformed values count as absent and out-of-range ones are
    /// clamped: a hostile or mistyped hash cannot set 10^9 workers.
    pub fn parse<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> NodeControl {
        let mut c = NodeControl::default();
        for (k, v) in fields {
            let v = v.trim();
            match k {
                field::SEQ => c.seq = v.parse().unwrap_or(0),
                field::PAUSED => c.paused = v == "1",
                field::DRAIN => c.drain = v == "1",
                field::REASON => {
                    c.reason = v
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_REASON)
                        .collect()
                }
                field::WORKERS => {
                    c.workers = v.parse::<usize>().ok().map(|w| w.clamp(1, MAX_WORKERS))
                }
                field::BWLIMIT => c.bwlimit = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        c
    }

    /// Why the node must not take jobs, when paused or draining.
    pub fn pause_reason(&self) -> Option<String> {
        let what = if self.paused {
            "paused by operator"
        } else if self.drain {
            "draining by operator"
        } else {
            return None;
        };
        Some(if self.reason.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {}", self.reason)
        })
    }

    /// What is applied, for people (the heartbeat's `control_applied`).
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(r) = self.pause_reason() {
            v.push(r);
        }
        if let Some(w) = self.workers {
            v.push(format!("workers={w}"));
        }
        if let Some(b) = self.bwlimit {
            v.push(format!("bwlimit={b}"));
        }
        if v.is_empty() {
            "as configured".into()
        } else {
            v.join("; ")
        }
    }
}

/// A change asked for by an operator; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlChange {
    /// Take no jobs (`Some(false)` resumes).
    pub paused: Option<bool>,
    /// Take no jobs and let running ones finish (`Some(false)` ends the drain).
    pub drain: Option<bool>,
    /// Why.
    pub reason: Option<String>,
    /// Workers (`Some(None)`: back to the configured number).
    pub workers: Option<Option<u32>>,
    /// Bandwidth cap in bytes/s (`Some(Some(0))`: unlimited; `Some(None)`: as configured).
    pub bwlimit: Option<Option<u64>>,
}

/// The writes a [`ControlChange`] makes to the hash (then `seq` is incremented), in one
/// atomic step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlWrites {
    /// Fields to set.
    pub set: Vec<(&'static str, String)>,
    /// Fields to delete (back to "as configured").
    pub delete: Vec<&'static str>,
}

impl ControlChange {
    /// The fields this change sets and deletes, stamped with who and when.
    pub fn writes(&self, by: &str, now_ms: i64) -> ControlWrites {
        let mut w = ControlWrites {
            set: vec![
                (field::BY, by.to_string()),
                (field::AT_MS, now_ms.to_string()),
            ],
            delete: Vec::new(),
        };
        if let Some(p) = self.paused {
            w.set.push((field::PAUSED, u8::from(p).to_string()));
        }
        if let Some(d) = self.drain {
            w.set.push((field::DRAIN, u8::from(d).to_string()));
        }
        if let Some(r) = &self.reason {
            w.set.push((field::REASON, r.clone()));
        }
        match self.workers {
            Some(Some(n)) => w.set.push((field::WORKERS, n.to_string())),
            Some(None) => w.delete.push(field::WORKERS),
            None => {}
        }
        match self.bwlimit {
            Some(Some(b)) => w.set.push((field::BWLIMIT, b.to_string())),
            Some(None) => w.delete.push(field::BWLIMIT),
            None => {}
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Applies writes as Redis would (delete, set, HINCRBY seq).
    fn apply(hash: &mut BTreeMap<String, String>, w: &ControlWrites) {
        for k in &w.delete {
            hash.remove(*k);
        }
        for (k, v) in &w.set {
            hash.insert(k.to_string(), v.clone());
        }
        let seq: i64 = hash
            .get(field::SEQ)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        hash.insert(field::SEQ.into(), (seq + 1).to_string());
    }

    fn read(hash: &BTreeMap<String, String>) -> NodeControl {
        NodeControl::parse(hash.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    #[test]
    fn what_the_dashboard_writes_is_what_a_node_reads() {
        let mut hash = BTreeMap::new();
        apply(
            &mut hash,
            &ControlChange {
                paused: Some(true),
                reason: Some("disk swap".into()),
                workers: Some(Some(3)),
                bwlimit: Some(Some(1 << 20)),
                ..ControlChange::default()
            }
            .writes("ops", 1_700_000_000_000),
        );
        let c = read(&hash);
        assert_eq!(
            c,
            NodeControl {
                seq: 1,
                paused: true,
                drain: false,
                reason: "disk swap".into(),
                workers: Some(3),
                bwlimit: Some(1 << 20),
            }
        );
        assert_eq!(
            c.pause_reason().as_deref(),
            Some("paused by operator: disk swap")
        );
        assert_eq!(hash.get(field::BY).map(String::as_str), Some("ops"));
        // Resume, and workers and the cap back to the configuration.
        apply(
            &mut hash,
            &ControlChange {
                paused: Some(false),
                workers: Some(None),
                bwlimit: Some(None),
                ..ControlChange::default()
            }
            .writes("ops", 1_700_000_000_001),
        );
        let c = read(&hash);
        assert_eq!(
            (c.seq, c.paused, c.workers, c.bwlimit),
            (2, false, None, None)
        );
        assert_eq!(c.pause_reason(), None);
    }

    #[test]
    fn a_hostile_hash_is_bounded() {
        let long = "x".repeat(10_000);
        let c = NodeControl::parse([
            ("seq", "3"),
            ("paused", "1"),
            ("reason", "disk swap\nnow"),
            ("workers", "100000"),
            ("bwlimit", "1048576"),
        ]);
        assert_eq!(c.reason, "disk swapnow");
        assert_eq!(c.workers, Some(MAX_WORKERS));
        let c = NodeControl::parse([("reason", long.as_str())]);
        assert_eq!(c.reason.chars().count(), MAX_REASON);
        let bad = NodeControl::parse([("seq", "x"), ("workers", "-1"), ("paused", "yes")]);
        assert_eq!(bad, NodeControl::default());
        assert_eq!(bad.describe(), "as configured");
    }
}
