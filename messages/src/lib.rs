//! The JSON contracts between ubackup daemons: pull jobs (the UBackup client's message and our
//! versioned schema), the wrapper around a requeued job, and pull results.
//!
//! Every consumer validates every field and reports *all* problems at once, instead of
//! UBackup's silent "message illegal" drop. File names and module paths are checked to be
//! relative with no `..`, and hosts to be IP literals, before anything acts on them.

mod event;
mod fields;
#[doc(hidden)]
pub mod fuzzing;
mod job;
mod legacy;
mod requeue;
mod result;

pub use event::{is_event, parse_event, EventError, EventKind, NodeEvent};
pub use fields::{FieldProblem, MessageError, MAX_MESSAGE_BYTES};
pub use job::{ChecksumHint, HintAlgorithm, Job, JobForm, JobIdentity, RSYNC_PORT};
pub use legacy::LegacyJob;
pub use requeue::{Delivery, HistoryEntry, Requeued, MAX_HISTORY};
pub use result::{parse_result, PullResult, ILLEGAL_PREFIX};
