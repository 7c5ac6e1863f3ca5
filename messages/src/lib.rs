//! The JSON contracts between ubackup daemons: pull jobs (the UBackup client's message and our
//! versioned schema), the wrapper around a requeued job, pull results, node events, the
//! restore plan the indexer serves to `ubackup-agent restore`, the node control hash and the
//! node heartbeat hash.
//!
//! Every consumer validates every field and reports *all* problems at once, instead of
//! UBackup's silent "message illegal" drop. File names and module paths are checked to be
//! relative with no `..`, and hosts to be IP literals, before anything acts on them.

pub mod control;
mod event;
mod fields;
#[doc(hidden)]
pub mod fuzzing;
pub mod heartbeat;
mod job;
mod legacy;
mod plan;
mod requeue;
mod result;

pub use control::{control_key, ControlChange, ControlWrites, NodeControl};
pub use event::{is_event, parse_event, EventError, EventKind, NodeEvent};
pub use fields::{FieldProblem, MessageError, MAX_MESSAGE_BYTES};
pub use heartbeat::{
    heartbeat_key, ControlReport, HeartbeatError, HeartbeatProblem, NodeHeartbeat, RedisLink,
};
pub use job::{ChecksumHint, HintAlgorithm, Job, JobForm, JobIdentity, RSYNC_PORT};
pub use legacy::LegacyJob;
pub use plan::{PlanHole, PlanInstance, PlanStep, RestorePlan, StepKind};
pub use requeue::{Delivery, HistoryEntry, Requeued, MAX_HISTORY};
pub use result::{parse_result, PullResult, ILLEGAL_PREFIX};

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary:
/// peer text is cut with this, never with `&s[..max]` (which panics inside a character).
pub fn truncate_str(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::truncate_str;

    #[test]
    fn truncation_never_splits_a_character() {
        // 199 ASCII bytes then a 3-byte character: a cut at 200 lands inside it.
        let name = format!("{}中.rdb", "a".repeat(199));
        assert_eq!(truncate_str(&name, 200), "a".repeat(199));
        assert_eq!(truncate_str(&name, 202), format!("{}中", "a".repeat(199)));
        assert_eq!(truncate_str(&name, 1000), name);
        assert_eq!(truncate_str("中", 2), "");
        assert_eq!(truncate_str("", 5), "");
    }
}
