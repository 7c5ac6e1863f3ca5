//! The wrapper a puller puts around a job it puts back on its list, so that the next node knows
//! how often the job has been retried and why, and a poison job ends in the dead-letter list
//! instead of circling for ever.
//!
//! ```json
//! {"ubackup_requeued": {"requeues": 1, "history": [{"at_ms": 1700000000000,
//!   "node_id": "node-5", "reason": "node node-5 restarted"}]}, "job": "<the original message>"}
//! ```

use serde::{Deserialize, Serialize};

use crate::fields::MAX_MESSAGE_BYTES;

/// History entries kept; older ones are dropped.
pub const MAX_HISTORY: usize = 16;

/// One event in a job's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When (epoch ms).
    pub at_ms: i64,
    /// The node concerned.
    pub node_id: String,
    /// What happened.
    pub reason: String,
}

/// Requeue bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requeued {
    /// Requeues that count towards the dead-letter limit (lost leases, restarts).
    pub requeues: u32,
    /// The most recent events.
    pub history: Vec<HistoryEntry>,
}

#[derive(Serialize, Deserialize)]
struct Wrapped {
    ubackup_requeued: Requeued,
    job: String,
}

/// A message from a job list, unwrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The original job message.
    pub job: Vec<u8>,
    /// Its requeue record (default for a first delivery).
    pub requeued: Requeued,
}

impl Delivery {
    /// Unwraps a message: a requeued job, or a job as its producer pushed it.
    pub fn unwrap(raw: &[u8]) -> Delivery {
        let marked = raw.windows(18).any(|w| w == b"\"ubackup_requeued\"");
        if raw.len() <= MAX_MESSAGE_BYTES * 2 && marked {
            if let Ok(w) = serde_json::from_slice::<Wrapped>(raw) {
                return Delivery {
                    job: w.job.into_bytes(),
                    requeued: w.ubackup_requeued,
                };
            }
        }
        Delivery {
            job: raw.to_vec(),
            requeued: Requeued::default(),
        }
    }

    /// Records an event and wraps the job for its list again. `counts` says whether the
    /// event counts towards the dead-letter limit.
    pub fn wrap(&self, entry: HistoryEntry, counts: bool) -> (Vec<u8>, Requeued) {
        let mut r = self.requeued.clone();
        if counts {
            r.requeues = r.requeues.saturating_add(1);
        }
        r.history.push(entry);
        if r.history.len() > MAX_HISTORY {
            let drop = r.history.len() - MAX_HISTORY;
            r.history.drain(..drop);
        }
        let w = Wrapped {
            ubackup_requeued: r.clone(),
            // Job messages are JSON text; anything else was dead-lettered before it got here.
            job: String::from_utf8_lossy(&self.job).into_owned(),
        };
        (serde_json::to_vec(&w).unwrap_or_default(), r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_and_unwrap_keep_the_job_and_count_requeues() {
        let d = Delivery::unwrap(br#"{"a": 1}"#);
        assert_eq!(d.requeued, Requeued::default());
        let e = HistoryEntry {
            at_ms: 5,
            node_id: "n1".into(),
            reason: "restart".into(),
        };
        let (w, n) = d.wrap(e.clone(), true);
        assert_eq!(n.requeues, 1);
        let d2 = Delivery::unwrap(&w);
        assert_eq!(d2.job, br#"{"a": 1}"#);
        assert_eq!(d2.requeued.requeues, 1);
        let (w3, n3) = d2.wrap(e, false);
        assert_eq!(n3.requeues, 1);
        assert_eq!(Delivery::unwrap(&w3).requeued.history.len(), 2);
    }

    #[test]
    fn history_is_bounded() {
        let mut d = Delivery::unwrap(b"{}");
        for i in 0..40 {
            let (w, _) = d.wrap(
                HistoryEntry {
                    at_ms: i,
                    node_id: "n".into(),
                    reason: "r".into(),
                },
                true,
            );
            d = Delivery::unwrap(&w);
        }
        assert_eq!(d.requeued.requeues, 40);
        assert_eq!(d.requeued.history.len(), MAX_HISTORY);
        assert_eq!(d.requeued.history[0].at_ms, 40 - MAX_HISTORY as i64);
    }

    #[test]
    fn key_order_does_not_matter() {
        let raw = br#"{"job": "{}", "ubackup_requeued": {"requeues": 2, "history": []}}"#;
        let d = Delivery::unwrap(raw);
        assert_eq!(d.job, b"{}");
        assert_eq!(d.requeued.requeues, 2);
    }

    #[test]
    fn a_lookalike_that_is_not_an_envelope_is_a_plain_job() {
        let raw = br#"{"ubackup_requeued": 3}"#;
        assert_eq!(Delivery::unwrap(raw).job, raw);
    }
}
