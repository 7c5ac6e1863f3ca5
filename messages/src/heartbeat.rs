//! A node's heartbeat: the Redis hash `<prefix>:node:<node_id>` that `ubackup-puller run`
//! rewrites every period with its lease as the TTL ([`NodeHeartbeat::to_fields`]), and that
//! the indexer's cluster status and nodes page, and a starting node checking that its id is
//! free, read back ([`NodeHeartbeat::parse`]). Both sides use these names, so a field renamed
//! on one side fails this crate's tests instead of showing zeros on the dashboard.
//!
//! Every value is a string: counters are decimal, flags `1`/`0`, text as it is. A missing field
//! reads as its default (a node of an older version writes fewer of them), and fields this
//! version does not know are ignored (a newer node may write more). The wire names are pinned
//! in the tests: nodes and indexers of the previous version read and write this hash.

use std::fmt;

use crate::truncate_str;

/// Field names of the heartbeat hash.
pub mod field {
    /// The node's id.
    pub const NODE_ID: &str = "node_id";
    /// Its address.
    pub const IP: &str = "ip";
    /// Its host name.
    pub const HOST: &str = "host";
    /// Its process id (a second process under the same id refuses to start).
    pub const PID: &str = "pid";
    /// Its version.
    pub const VERSION: &str = "version";
    /// When it was written (ms since the epoch).
    pub const UPDATED_MS: &str = "updated_ms";
    /// Free bytes under the backup root.
    pub const FREE_BYTES: &str = "free_bytes";
    /// Size of that filesystem.
    pub const TOTAL_BYTES: &str = "total_bytes";
    /// `1` when it takes no jobs.
    pub const PAUSED: &str = "paused";
    /// Why (empty when not paused).
    pub const PAUSED_REASON: &str = "paused_reason";
    /// Workers busy with a job.
    pub const BUSY_WORKERS: &str = "busy_workers";
    /// Workers.
    pub const WORKERS: &str = "workers";
    /// File bytes written per second over the last period.
    pub const BYTES_PER_SECOND: &str = "bytes_per_second";
    /// Jobs that ended in a success result.
    pub const DONE: &str = "done";
    /// Jobs that ended in a failure result.
    pub const FAILED: &str = "failed";
    /// Jobs whose work panicked.
    pub const INTERNAL_ERRORS: &str = "internal_errors";
    /// Jobs passed over now because they do not fit on the disk.
    pub const DEFERRED_JOBS: &str = "deferred_jobs";
    /// Partial files kept for resume.
    pub const PARTIAL_FILES: &str = "partial_files";
    /// Their bytes.
    pub const PARTIAL_BYTES: &str = "partial_bytes";
    /// Partial files removed by the sweeps.
    pub const PARTIALS_REMOVED: &str = "partials_removed";
    /// Temp files of dead pulls cleared by the sweeps.
    pub const TEMPS_CLEARED: &str = "temps_cleared";
    /// Jobs pulled over TLS.
    pub const PULLS_TLS: &str = "pulls_tls";
    /// Jobs pulled over plain rsync.
    pub const PULLS_PLAIN: &str = "pulls_plain";
    /// Pull attempts that failed in TLS.
    pub const TLS_HANDSHAKE_FAILURES: &str = "tls_handshake_failures";
    /// Prefix of a queue length field: `queue:<list>`.
    pub const QUEUE_PREFIX: &str = "queue:";
    /// The control `seq` the node applied last (see [`crate::control`]).
    pub const CONTROL_SEQ: &str = crate::control::field::CONTROL_SEQ;
    /// What the node applied, for people.
    pub const CONTROL_APPLIED: &str = crate::control::field::CONTROL_APPLIED;
    /// `1` when draining with nothing running.
    pub const DRAINED: &str = crate::control::field::DRAINED;
    /// `host:port` of the Redis master the node's queue connection last reached.
    pub const REDIS_MASTER: &str = "redis_master";
    /// Times that master's address changed (failovers followed).
    pub const REDIS_MASTER_CHANGES: &str = "redis_master_changes";
    /// Connections opened after the first.
    pub const REDIS_RECONNECTS: &str = "redis_reconnects";
    /// Writes fewer replicas than required acknowledged in time.
    pub const REDIS_UNCONFIRMED_WRITES: &str = "redis_unconfirmed_writes";
}

/// Longest text value kept (characters); longer ones are cut.
pub const MAX_TEXT: usize = 1024;
/// Most `queue:<list>` fields read; more are ignored.
pub const MAX_QUEUES: usize = 64;
/// Longest value quoted in a [`HeartbeatProblem`] (bytes).
const MAX_QUOTED: usize = 64;

/// The heartbeat's own counters and text, as the node writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHeartbeat {
    /// The node's id.
    pub node_id: String,
    /// Its address.
    pub ip: String,
    /// Its host name.
    pub host: String,
    /// Its process id (0: unknown).
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// When the heartbeat was written (ms since the epoch).
    pub updated_ms: i64,
    /// Free bytes under the backup root.
    pub free_bytes: u64,
    /// Size of that filesystem.
    pub total_bytes: u64,
    /// Whether it takes no jobs.
    pub paused: bool,
    /// Why (empty when not paused).
    pub paused_reason: String,
    /// Workers busy with a job.
    pub busy_workers: u64,
    /// Workers.
    pub workers: u64,
    /// File bytes written per second over the last period.
    pub bytes_per_second: u64,
    /// Jobs that ended in a success result.
    pub done: u64,
    /// Jobs that ended in a failure result.
    pub failed: u64,
    /// Jobs whose work panicked.
    pub internal_errors: u64,
    /// Jobs passed over now because they do not fit on the disk.
    pub deferred_jobs: u64,
    /// Partial files kept for resume.
    pub partial_files: u64,
    /// Their bytes.
    pub partial_bytes: u64,
    /// Partial files removed by the sweeps.
    pub partials_removed: u64,
    /// Temp files of dead pulls cleared by the sweeps.
    pub temps_cleared: u64,
    /// Jobs pulled over TLS.
    pub pulls_tls: u64,
    /// Jobs pulled over plain rsync.
    pub pulls_plain: u64,
    /// Pull attempts that failed in TLS.
    pub tls_handshake_failures: u64,
    /// Queue lengths (job lists, then the dead-letter list), at most [`MAX_QUEUES`].
    pub queues: Vec<(String, u64)>,
    /// What the node applied of its control hash.
    pub control: ControlReport,
    /// The queue connection's state, when the node has a Redis queue.
    pub redis: Option<RedisLink>,
}

/// The control fields of a heartbeat: what the node applied of its control hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlReport {
    /// The `seq` it applied last (0: none).
    pub seq: i64,
    /// What it applied, for people.
    pub applied: String,
    /// Draining with nothing running.
    pub drained: bool,
}

/// The Redis fields of a heartbeat: the node's queue connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisLink {
    /// `host:port` of the master last reached (empty: none yet).
    pub master: String,
    /// Times the master's address changed.
    pub master_changes: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Writes fewer replicas than required acknowledged in time.
    pub unconfirmed_writes: u64,
}

/// One malformed field of a heartbeat hash. Field names and values are quoted cut to a few
/// dozen bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeartbeatProblem {
    /// A value that is not what the field holds; the field reads as its default.
    Malformed {
        /// The field.
        field: String,
        /// Its value (cut).
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A text value longer than [`MAX_TEXT`] characters; the first ones are kept.
    TooLong {
        /// The field.
        field: String,
        /// Its length in bytes.
        len: usize,
    },
    /// More than [`MAX_QUEUES`] queue fields; the others are ignored.
    TooManyQueues {
        /// How many there were.
        count: usize,
    },
}

impl fmt::Display for HeartbeatProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeartbeatProblem::Malformed {
                field,
                value,
                expected,
            } => write!(f, "{field}: {value:?} is not {expected}"),
            HeartbeatProblem::TooLong { field, len } => {
                write!(f, "{field}: {len} bytes, cut to {MAX_TEXT} characters")
            }
            HeartbeatProblem::TooManyQueues { count } => {
                write!(f, "{count} queue fields, the first {MAX_QUEUES} read")
            }
        }
    }
}

/// A heartbeat hash with malformed fields. It still carries what could be read: every bad
/// field at its default, every long one cut ([`HeartbeatError::salvaged`]), so that a status
/// page can show the node and say what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatError {
    /// Every problem found.
    pub problems: Vec<HeartbeatProblem>,
    /// The heartbeat with bad fields at their defaults.
    pub salvaged: Box<NodeHeartbeat>,
}

impl fmt::Display for HeartbeatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed node heartbeat: ")?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for HeartbeatError {}

/// The heartbeat key of a node.
pub fn heartbeat_key(prefix: &str, node_id: &str) -> String {
    format!("{prefix}:node:{node_id}")
}

impl NodeHeartbeat {
    /// The hash's fields, in the order the node has always written them.
    pub fn to_fields(&self) -> Vec<(String, String)> {
        let flag = |b: bool| u8::from(b).to_string();
        let mut v: Vec<(String, String)> = [
            (field::NODE_ID, self.node_id.clone()),
            (field::IP, self.ip.clone()),
            (field::HOST, self.host.clone()),
            (field::PID, self.pid.to_string()),
            (field::VERSION, self.version.clone()),
            (field::UPDATED_MS, self.updated_ms.to_string()),
            (field::FREE_BYTES, self.free_bytes.to_string()),
            (field::TOTAL_BYTES, self.total_bytes.to_string()),
            (field::PAUSED, flag(self.paused)),
            (field::PAUSED_REASON, self.paused_reason.clone()),
            (field::BUSY_WORKERS, self.busy_workers.to_string()),
            (field::WORKERS, self.workers.to_string()),
            (field::BYTES_PER_SECOND, self.bytes_per_second.to_string()),
            (field::DONE, self.done.to_string()),
            (field::FAILED, self.failed.to_string()),
            (field::INTERNAL_ERRORS, self.internal_errors.to_string()),
            (field::DEFERRED_JOBS, self.deferred_jobs.to_string()),
            (field::PARTIAL_FILES, self.partial_files.to_string()),
            (field::PARTIAL_BYTES, self.partial_bytes.to_string()),
            (field::PARTIALS_REMOVED, self.partials_removed.to_string()),
            (field::TEMPS_CLEARED, self.temps_cleared.to_string()),
            (field::PULLS_TLS, self.pulls_tls.to_string()),
            (field::PULLS_PLAIN, self.pulls_plain.to_string()),
            (
                field::TLS_HANDSHAKE_FAILURES,
                self.tls_handshake_failures.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (name, len) in &self.queues {
            v.push((format!("{}{name}", field::QUEUE_PREFIX), len.to_string()));
        }
        v.push((field::CONTROL_SEQ.into(), self.control.seq.to_string()));
        v.push((field::CONTROL_APPLIED.into(), self.control.applied.clone()));
        v.push((field::DRAINED.into(), flag(self.control.drained)));
        if let Some(r) = &self.redis {
            v.push((field::REDIS_MASTER.into(), r.master.clone()));
            v.push((
                field::REDIS_MASTER_CHANGES.into(),
                r.master_changes.to_string(),
            ));
            v.push((field::REDIS_RECONNECTS.into(), r.reconnects.to_string()));
            v.push((
                field::REDIS_UNCONFIRMED_WRITES.into(),
                r.unconfirmed_writes.to_string(),
            ));
        }
        v
    }

    /// Reads a hash's fields (as `HGETALL` returns them). Missing fields read as their
    /// defaults and unknown ones are ignored; a malformed value, an overlong text or too many
    /// queues is an error that lists them all and still carries the rest, bounded.
    pub fn parse<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<NodeHeartbeat, HeartbeatError> {
        let mut r = Reader::default();
        let mut queues = 0usize;
        for (k, v) in fields {
            let h = &mut r.hb;
            match k {
                field::NODE_ID => h.node_id = r.problems.text(k, v),
                field::IP => h.ip = r.problems.text(k, v),
                field::HOST => h.host = r.problems.text(k, v),
                field::PID => h.pid = r.problems.number(k, v, "a process id"),
                field::VERSION => h.version = r.problems.text(k, v),
                field::UPDATED_MS => h.updated_ms = r.problems.number(k, v, "an integer"),
                field::FREE_BYTES => h.free_bytes = r.problems.count(k, v),
                field::TOTAL_BYTES => h.total_bytes = r.problems.count(k, v),
                field::PAUSED => h.paused = r.problems.flag(k, v),
                field::PAUSED_REASON => h.paused_reason = r.problems.text(k, v),
                field::BUSY_WORKERS => h.busy_workers = r.problems.count(k, v),
                field::WORKERS => h.workers = r.problems.count(k, v),
                field::BYTES_PER_SECOND => h.bytes_per_second = r.problems.count(k, v),
                field::DONE => h.done = r.problems.count(k, v),
                field::FAILED => h.failed = r.problems.count(k, v),
                field::INTERNAL_ERRORS => h.internal_errors = r.problems.count(k, v),
                field::DEFERRED_JOBS => h.deferred_jobs = r.problems.count(k, v),
                field::PARTIAL_FILES => h.partial_files = r.problems.count(k, v),
                field::PARTIAL_BYTES => h.partial_bytes = r.problems.count(k, v),
                field::PARTIALS_REMOVED => h.partials_removed = r.problems.count(k, v),
                field::TEMPS_CLEARED => h.temps_cleared = r.problems.count(k, v),
                field::PULLS_TLS => h.pulls_tls = r.problems.count(k, v),
                field::PULLS_PLAIN => h.pulls_plain = r.problems.count(k, v),
                field::TLS_HANDSHAKE_FAILURES => h.tls_handshake_failures = r.problems.count(k, v),
                field::CONTROL_SEQ => h.control.seq = r.problems.number(k, v, "an integer"),
                field::CONTROL_APPLIED => h.control.applied = r.problems.text(k, v),
                field::DRAINED => h.control.drained = r.problems.flag(k, v),
                field::REDIS_MASTER => {
                    h.redis.get_or_insert_default().master = r.problems.text(k, v)
                }
                field::REDIS_MASTER_CHANGES => {
                    h.redis.get_or_insert_default().master_changes = r.problems.count(k, v)
                }
                field::REDIS_RECONNECTS => {
                    h.redis.get_or_insert_default().reconnects = r.problems.count(k, v)
                }
                field::REDIS_UNCONFIRMED_WRITES => {
                    h.redis.get_or_insert_default().unconfirmed_writes = r.problems.count(k, v)
                }
                _ => {
                    if let Some(name) = k.strip_prefix(field::QUEUE_PREFIX) {
                        queues += 1;
                        if queues <= MAX_QUEUES {
                            let name = r.problems.text(k, name);
                            let len = r.problems.count(k, v);
                            r.hb.queues.push((name, len));
                        }
                    }
                }
            }
        }
        if queues > MAX_QUEUES {
            r.problems
                .0
                .push(HeartbeatProblem::TooManyQueues { count: queues });
        }
        if r.problems.0.is_empty() {
            Ok(r.hb)
        } else {
            Err(HeartbeatError {
                problems: r.problems.0,
                salvaged: Box::new(r.hb),
            })
        }
    }
}

#[derive(Default)]
struct Reader {
    hb: NodeHeartbeat,
    problems: Problems,
}

#[derive(Default)]
struct Problems(Vec<HeartbeatProblem>);

impl Problems {
    fn malformed(&mut self, field: &str, value: &str, expected: &'static str) {
        self.0.push(HeartbeatProblem::Malformed {
            field: truncate_str(field, MAX_QUOTED).to_string(),
            value: truncate_str(value, MAX_QUOTED).to_string(),
            expected,
        });
    }

    fn number<T: std::str::FromStr + Default>(
        &mut self,
        field: &str,
        value: &str,
        expected: &'static str,
    ) -> T {
        value.parse().unwrap_or_else(|_| {
            self.malformed(field, value, expected);
            T::default()
        })
    }

    fn count(&mut self, field: &str, value: &str) -> u64 {
        self.number(field, value, "an unsigned integer")
    }

    fn flag(&mut self, field: &str, value: &str) -> bool {
        match value {
            "1" => true,
            "0" => false,
            _ => {
                self.malformed(field, value, "0 or 1");
                false
            }
        }
    }

    fn text(&mut self, field: &str, value: &str) -> String {
        match value.char_indices().nth(MAX_TEXT) {
            None => value.to_string(),
            Some((cut, _)) => {
                self.0.push(HeartbeatProblem::TooLong {
                    field: truncate_str(field, MAX_QUOTED).to_string(),
                    len: value.len(),
                });
                truncate_str(value, cut).to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests;
