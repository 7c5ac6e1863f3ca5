//! Operator control of a running node, written by the dashboard into the cluster's Redis as
//! the hash `<prefix>:control:<node_id>` and read here at every heartbeat.
//!
//! The fields, their bounds and the heartbeat reply are the contract in
//! [`ubackup_messages::control`], shared with the indexer. A node applies a new `seq` at its next heartbeat and reports it in
//! the heartbeat hash as `control_seq` and `control_applied` (what it applied, for people).
//!
//! Pause and drain both stop the dispatcher from taking jobs (the same gate as the disk
//! reserve); running pulls finish. Workers and the bandwidth cap go through the same path as a
//! SIGHUP reload (`apply_reload`): the SIGHUP channel is wrapped so that a control change is
//! the latest configuration plus the operator's overrides, and a later SIGHUP keeps them.
//!
//! Every value is bounded: a hostile or mistyped hash cannot set 10^9 workers.

use std::sync::Mutex;

use rsync_proto::limit::Rate;
use tokio::sync::mpsc;
use ubackup_messages::ControlReport;

use crate::config::NodeConfig;
use crate::queue::JobQueue;

pub use ubackup_messages::control::{MAX_REASON, MAX_WORKERS};
/// What the control hash asks for: the contract type shared with the indexer.
pub use ubackup_messages::NodeControl as Desired;

/// `base` with the control's workers and bandwidth cap.
pub fn apply_control(d: &Desired, base: &NodeConfig) -> NodeConfig {
    let mut c = base.clone();
    if let Some(w) = d.workers {
        c.workers = w;
    }
    if let Some(b) = d.bwlimit {
        c.bwlimit = (b > 0).then(|| Rate::bytes_per_sec(b));
    }
    c
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
                if out_tx.send(apply_control(&ov, &base)).await.is_err() {
                    break;
                }
            }
        });
        out_rx
    }

    /// Reads the control hash and applies a new `seq`. Called at every heartbeat.
    pub async fn poll(&self, queue: &impl JobQueue) {
        let h = match queue.control().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("cannot read the control hash: {e}");
                return;
            }
        };
        self.apply(Desired::parse(
            h.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
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

    /// The heartbeat's control fields: the applied `seq`, what it applied, and whether it
    /// is drained (draining with nothing running).
    pub fn report(&self, busy: u64) -> ControlReport {
        let a = self.applied();
        ControlReport {
            seq: a.seq,
            applied: a.describe(),
            drained: a.drain && busy == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
        let r = c.report(0);
        assert_eq!((r.seq, r.drained), (2, false));
        assert_eq!(r.applied, "as configured");
        assert!(c.apply(Desired {
            seq: 3,
            drain: true,
            ..Desired::default()
        }));
        assert!(c.report(0).drained);
        assert!(!c.report(1).drained);
    }
}
