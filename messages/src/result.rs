//! The result a puller publishes for every job it takes, on UBackup's message queue.
//!
//! The first block of fields is UBackup's (`uuzubackup_server.py`), with the same names and
//! units, so that an existing indexer keeps working: `create_time`, `rsync_time` and
//! `last_all_time` are epoch **milliseconds**, `last_all_filename` is the string `"None"` when
//! there is none, `succeed` is 0 or 1 and `type` is the backup type. The rest are ubackup's
//! additions. Results are LPUSHed; a consumer reads oldest-first with RPOP/BRPOP.

use serde::{Deserialize, Serialize};

/// The prefix of `log` for a message that never reached rsync.
pub const ILLEGAL_PREFIX: &str = "illegal message: ";

/// One job's result. `Default` is an empty failure, to be filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResult {
    // --- UBackup's fields ---
    /// The producer's backup period in seconds.
    pub interval: Option<i64>,
    /// The database host's asset id (absent only for a message too broken to name it).
    pub server_id: Option<String>,
    /// The business id.
    pub game_id: Option<i64>,
    /// Reserved id.
    pub op_id: Option<i64>,
    /// The host pulled from.
    pub game_server_ip: Option<String>,
    /// Instance number.
    pub instance: Option<i64>,
    /// This node's address (`myip`).
    pub back_server_ip: String,
    /// The destination directory.
    pub file_path: Option<String>,
    /// The backup file name, as the job gave it.
    pub filename: Option<String>,
    /// When the producer's run started (ms).
    pub create_time: i64,
    /// When the pull ended (ms).
    pub rsync_time: i64,
    /// File size: the received size on success, else the size the job reported.
    pub size: Option<u64>,
    /// The full backup an incremental depends on, or `"None"`.
    pub last_all_filename: String,
    /// When that full was made (ms; 0 if none).
    pub last_all_time: i64,
    /// 1 when the backup is on this node, verified and durable.
    pub succeed: u8,
    /// `ok`, or what went wrong.
    pub log: String,
    /// Backup type.
    #[serde(rename = "type")]
    pub back_type: Option<String>,
    // --- ubackup's additions ---
    /// The job id (the producer's, or one derived from the message for UBackup clients).
    pub job_id: String,
    /// The node that pulled.
    pub node_id: String,
    /// Whole-file checksum of the received file, hex.
    pub checksum: Option<String>,
    /// Its algorithm (`xxh128`, `md5`, `sha256`, ...).
    pub checksum_algorithm: Option<String>,
    /// The previous incremental this one was taken against, when it is not the full (v1 jobs
    /// from the agent; absent for UBackup clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_filename: Option<String>,
    /// When that previous backup's run started (ms; 0 if none).
    #[serde(default)]
    pub prev_time: i64,
    /// The size the job reported, when it differs from the received size.
    pub expected_size: Option<u64>,
    /// The received size differs from the size the job reported.
    pub size_mismatch: bool,
    /// Bytes read from the network.
    pub bytes_received: u64,
    /// File bytes that arrived as data.
    pub literal_bytes: u64,
    /// File bytes copied from the basis.
    pub matched_bytes: u64,
    /// The delta basis, relative to the node's root.
    pub basis: Option<String>,
    /// Connection attempts made for this delivery.
    pub attempts: u32,
    /// Times the job was requeued after a node died or restarted while holding it.
    pub requeues: u32,
    /// The list the job was taken from.
    pub queue: Option<String>,
    /// The first characters of an illegal message that names no instance (control characters
    /// escaped), so the person reading its alert sees what it was; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_excerpt: Option<String>,
    /// When this node took the job (ms).
    pub taken_ms: i64,
    /// Wall time from taking the job to its result.
    pub duration_ms: u64,
}

impl PullResult {
    /// Whether this is a success.
    pub fn succeeded(&self) -> bool {
        self.succeed == 1
    }
}

/// Parses a result (for consumers and tests).
pub fn parse_result(bytes: &[u8]) -> Result<PullResult, serde_json::Error> {
    serde_json::from_slice(bytes)
}
