//! Operator control of a running node, written by the dashboard into the cluster's Redis as
//! the hash `<prefix>:control:<node_id>` and read here at every heartbeat.
//!
//! Fields (strings; a missing one means "as configured"): `seq` (bumped by every change),
//! `paused` and `drain` (`1`/`0`), `reason`, `workers`, `bwlimit` (bytes per second, `0` =
//! no cap), `by`, `at_ms`. A node applies a new `seq` at its next heartbeat and reports it in
//! the heartbeat hash as `control_seq` and `control_applied` (what it applied, for people).
//!
//! Pause and drain both stop the dispatcher from taking jobs (the same gate as the disk
//! reserve); running pulls finish. Workers and the bandwidth cap go through the same path as a
//! SIGHUP reload (`apply_reload`): the SIGHUP channel is wrapped so that a control change is
//! the latest configuration plus the operator's overrides, and a later SIGHUP keeps them.
//!
//! Every value is bounded: a hostile or mistyped hash cannot set 10^9 workers.

use std::collections::HashMap;
use std::sync::Mutex;

use rsync_proto::limit::Rate;
use tokio::sync::mpsc;

use crate::config::NodeConfig;
use crate::queue::RedisQueue;

/// Most workers the control hash may set.
pub const MAX_WORKERS: usize = 256;
/// Longest reason kept.
pub const MAX_REASON: usize = 200;

/// What the control hash asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Change counter (0: no hash).
    pub seq: i64,
    /// Stop taking jobs.
    pub paused: bool,
    /// Stop taking jobs, let running ones finish.
    pub drain: bool,
    /// Why.
    pub reason: String,
    /// Workers, when overridden.
    pub workers: Option<usize>,
    /// Bandwidth cap in bytes/s (0 = none), when overridden.
    pub bwlimit: Option<u64>,
}

impl Desired {
    /// Reads the hash; malformed values count as absent, out-of-range ones are clamped.
    pub fn parse(h: &HashMap<String, String>) -> Desired {
        let flag = |k: &str| h.get(k).is_some_and(|v| v.trim() == "1");
        Desired {
            seq: h
                .get("seq")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            paused: flag("paused"),
            drain: flag("drain"),
            reason: h
                .get("reason")
                .map(|r| {
                    r.chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_REASON)
                        .collect()
                })
                .unwrap_or_default(),
            workers: h
                .get("workers")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .map(|w| w.clamp(1, MAX_WORKERS)),
            bwlimit: h.get("bwlimit").and_then(|v| v.trim().parse::<u64>().ok()),
        }
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

    /// What was applied, for the heartbeat.
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

    /// `base` with this control's workers and cap.
    pub fn apply_to(&self, base: &NodeConfig) -> NodeConfig {
        let mut c = base.clone();
        if let Some(w) = self.workers {
            c.workers = w;
        }
        if let Some(b) = self.bwlimit {
            c.bwlimit = (b > 0).then(|| Rate::bytes_per_sec(b));
        }
        c
    }
}

/// The node's operator control: what is applied, and the way to the dispatcher.
#[derive(Debug, Default)]
pub struct OperatorControl {
    applied: Mutex<Desired>,
    to_dispatcher: Mutex<Option<mpsc::UnboundedSender<Desired>>>,
}

impl OperatorControl {
    /// Why the node must not take jobs now, if the operator said so.
    pub fn pause_reason(&self) -> Option<String> {
        self.applied.lock().ok().and_then(|a| a.pause_reason())
    }

    /// What is applied now.
    pub fn applied(&self) -> Desired {
        self.applied.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Wraps the SIGHUP channel: the returned receiver yields every SIGHUP configuration and
    /// every control change, each as the latest configuration with the operator's overrides.
    pub fn wire(
        &self,
        base: NodeConfig,
        mut reload: mpsc::Receiver<NodeConfig>,
    ) -> mpsc::Receiver<NodeConfig> {
        let (out_tx, out_rx) = mpsc::channel(4);
        let (op_tx, mut op_rx) = mpsc::unbounded_channel::<Desired>();
        if let Ok(mut t) = self.to_dispatcher.lock() {
            *t = Some(op_tx);
        }
        tokio::spawn(async move {
            let mut base = base;
            let mut ov = Desired::default();
            let mut reload_open = true;
            loop {
                tokio::select! {
                    c = reload.recv(), if reload_open => match c {
                        Some(c) => base = c,
                        None => { reload_open = false; continue; }
                    },
                    o = op_rx.recv() => match o {
                        Some(o) => ov = o,
                        None => break,
                    },
                }
                if out_tx.send(ov.apply_to(&base)).await.is_err() {
                    break;
                }
            }
        });
        out_rx
    }

    /// Reads the control hash and applies a new `seq`. Called at every heartbeat.
    pub async fn poll(&self, queue: &RedisQueue) {
        let h = match queue.control().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("cannot read the control hash: {e}");
                return;
            }
        };
        self.apply(Desired::parse(&h));
    }

    /// Applies `want` if its `seq` is new; whether it was.
    pub fn apply(&self, want: Desired) -> bool {
        let Ok(mut applied) = self.applied.lock() else {
            return false;
        };
        if want.seq == applied.seq && want == *applied {
            return false;
        }
        let tune = want.workers != applied.workers || want.bwlimit != applied.bwlimit;
        tracing::info!(
            seq = want.seq,
            applied = %want.describe(),
            "operator control applied"
        );
        if tune {
            if let Ok(t) = self.to_dispatcher.lock() {
                if let Some(t) = t.as_ref() {
                    let _ = t.send(want.clone());
                }
            }
        }
        *applied = want;
        true
    }

    /// Heartbeat fields: `control_seq`, `control_applied`, and `drained` (draining with
    /// nothing running).
    pub fn heartbeat_fields(&self, busy: u64) -> Vec<(String, String)> {
        let a = self.applied();
        vec![
            ("control_seq".into(), a.seq.to_string()),
            ("control_applied".into(), a.describe()),
            ("drained".into(), u8::from(a.drain && busy == 0).to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn h(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_bounds_the_hash() {
        let d = Desired::parse(&h(&[
            ("seq", "3"),
            ("paused", "1"),
            ("reason", "disk swap\nnow"),
            ("workers", "100000"),
            ("bwlimit", "1048576"),
        ]));
        assert_eq!(d.seq, 3);
        assert!(d.paused && !d.drain);
        assert_eq!(d.reason, "disk swapnow");
        assert_eq!(d.workers, Some(MAX_WORKERS));
        assert_eq!(d.bwlimit, Some(1_048_576));
        assert_eq!(
            d.pause_reason().unwrap(),
            "paused by operator: disk swapnow"
        );
        let bad = Desired::parse(&h(&[("seq", "x"), ("workers", "-1"), ("paused", "yes")]));
        assert_eq!(bad, Desired::default());
        assert_eq!(bad.pause_reason(), None);
        assert_eq!(bad.describe(), "as configured");
    }

    #[test]
    fn applies_only_a_new_change_and_resumes() {
        let c = OperatorControl::default();
        let p = Desired {
            seq: 1,
            paused: true,
            ..Desired::default()
        };
        assert!(c.apply(p.clone()));
        assert!(!c.apply(p));
        assert!(c.pause_reason().is_some());
        assert!(c.apply(Desired {
            seq: 2,
            ..Desired::default()
        }));
        assert_eq!(c.pause_reason(), None);
        let f = c.heartbeat_fields(0);
        assert_eq!(f[0], ("control_seq".into(), "2".into()));
    }
}
