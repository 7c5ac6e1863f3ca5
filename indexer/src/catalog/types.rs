//! Values that cross the catalog boundary.

use serde::{Deserialize, Serialize};
use ubackup_messages::NodeEvent;

use super::rows::Flag;

/// An instance: (server_id, lower-cased type, instance number).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::FromRow,
)]
pub struct InstanceKey {
    /// The database host's asset id.
    pub server_id: String,
    /// The backup type, lower-cased (`MySQL` and `mysql` are one type).
    #[serde(rename = "type")]
    pub type_key: String,
    /// The instance number.
    pub instance: i64,
}

impl InstanceKey {
    /// A key, lower-casing the type.
    pub fn new(server_id: &str, back_type: &str, instance: i64) -> InstanceKey {
        InstanceKey {
            server_id: server_id.to_string(),
            type_key: back_type.to_lowercase(),
            instance,
        }
    }

    /// `server_id:type:instance`, UBackup's heartbeat key and our alert subject.
    pub fn subject(&self) -> String {
        format!("{}:{}:{}", self.server_id, self.type_key, self.instance)
    }
}

/// One validated result, ready for the catalog (all integers fit an i64).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[allow(missing_docs)] // the fields are PullResult's, documented there
pub struct Record {
    pub job_id: String,
    pub server_id: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub back_type: String,
    pub instance: i64,
    pub game_id: Option<i64>,
    pub op_id: Option<i64>,
    pub interval_secs: Option<i64>,
    pub game_server_ip: Option<String>,
    pub back_server_ip: String,
    pub node_id: String,
    pub file_path: Option<String>,
    pub filename: Option<String>,
    pub create_time: i64,
    pub rsync_time: i64,
    pub size: Option<i64>,
    pub last_all_filename: Option<String>,
    pub last_all_time: i64,
    pub prev_filename: Option<String>,
    pub prev_time: i64,
    #[sqlx(try_from = "Flag")]
    pub succeed: bool,
    pub log: String,
    pub checksum: Option<String>,
    pub checksum_algorithm: Option<String>,
    pub expected_size: Option<i64>,
    #[sqlx(try_from = "Flag")]
    pub size_mismatch: bool,
    pub bytes_received: i64,
    pub literal_bytes: i64,
    pub matched_bytes: i64,
    pub basis: Option<String>,
    pub attempts: i64,
    pub requeues: i64,
    pub queue: Option<String>,
    pub taken_ms: i64,
    pub duration_ms: i64,
    /// An illegal message's first characters, when nothing in it names its instance. Not
    /// stored with the backup: kept as its instance state's `last_raw`.
    #[sqlx(skip)]
    pub raw_excerpt: Option<String>,
    /// The node dead-lettered the job as illegal (`log` starts with `illegal message: `).
    /// Not stored: derived from `log` when read back.
    #[sqlx(skip)]
    pub illegal: bool,
}

impl Record {
    /// Its instance.
    pub fn key(&self) -> InstanceKey {
        InstanceKey::new(&self.server_id, &self.back_type, self.instance)
    }
}

/// One item of an ingest batch.
#[derive(Debug, Clone)]
pub enum Ingest {
    /// A pull result.
    Result(Box<Record>),
    /// A node life-cycle event about a stored file.
    Event(Box<NodeEvent>),
}

/// What an ingest batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// New backup rows.
    pub inserted: u64,
    /// Results already in the catalog (replays, requeued duplicates).
    pub duplicates: u64,
    /// Events that marked a row.
    pub marked: u64,
    /// Events that matched no row.
    pub unmatched_events: u64,
}

/// A page of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows to skip.
    pub offset: i64,
    /// Rows to return.
    pub limit: i64,
}

/// A backup row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Backup {
    /// Catalog id.
    pub id: i64,
    /// The result.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub record: Record,
    /// When the indexer wrote it (ms).
    pub indexed_ms: i64,
    /// When a node reported it deleted by retention (ms).
    pub expired_at: Option<i64>,
    /// When a node reported it corrupt or unreadable (ms).
    pub corrupt_at: Option<i64>,
    /// The node's reason for the mark.
    pub mark_reason: Option<String>,
}

impl Backup {
    /// Whether it can be restored from: succeeded, not expired, not corrupt.
    pub fn usable(&self) -> bool {
        self.record.succeed && self.expired_at.is_none() && self.corrupt_at.is_none()
    }
}

/// A registered instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Instance {
    /// Its key.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub key: InstanceKey,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Business (UBackup's game_id / business_id).
    #[serde(default)]
    pub business_id: Option<i64>,
    /// Expected backup period, seconds (none: the period the results carry, else the default).
    #[serde(default)]
    pub interval_secs: Option<i64>,
    /// Whether it is expected to back up at all.
    #[serde(default = "yes")]
    #[sqlx(try_from = "Flag")]
    pub enabled: bool,
    /// When it was registered (ms; set by the catalog).
    #[serde(default, skip_deserializing)]
    pub created_ms: i64,
}

fn yes() -> bool {
    true
}

/// A business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Business {
    /// UBackup's `business_id` (the client's `game_id`).
    pub business_id: i64,
    /// Its name.
    pub name: String,
}

/// A backup type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct BackupType {
    /// UBackup's `backup_type.id` (batch-add lines name types by it).
    pub id: i64,
    /// Its name.
    pub name: String,
}

/// The latest state of an instance, as results left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct InstanceState {
    /// The instance.
    #[sqlx(flatten)]
    pub key: InstanceKey,
    /// The type as it arrived.
    #[sqlx(rename = "type")]
    pub back_type: String,
    /// Business.
    pub game_id: Option<i64>,
    /// The database host.
    pub game_server_ip: Option<String>,
    /// create_time of the latest result (ms).
    pub last_ms: i64,
    /// Whether that result succeeded.
    #[sqlx(try_from = "Flag")]
    pub last_succeed: bool,
    /// Its log.
    pub last_log: String,
    /// create_time of the latest success (0: never).
    pub last_ok_ms: i64,
    /// The newest illegal message (ms; 0: never).
    pub last_illegal_ms: i64,
    /// The newest corrupt/unreadable event (ms; 0: never).
    pub last_corrupt_ms: i64,
    /// Its reason.
    pub last_corrupt_reason: Option<String>,
    /// The period the latest result carried (s).
    pub interval_secs: Option<i64>,
    /// The node that sent the latest result.
    pub last_node: Option<String>,
    /// The queue the latest result's job was taken from.
    pub last_queue: Option<String>,
    /// The raw excerpt of the latest result (an illegal message without identity).
    pub last_raw: Option<String>,
}

/// Grouping of statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatsBy {
    /// UTC day.
    Day,
    /// game_id.
    Business,
    /// Backup type.
    Type,
    /// node_id.
    Node,
}

/// One statistics row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StatsRow {
    /// The group (day `YYYY-MM-DD`, business id, type or node).
    pub group: String,
    /// Results.
    pub count: i64,
    /// Bytes of successful backups.
    pub bytes: i64,
    /// Failed results.
    pub failures: i64,
    /// Median pull duration (ms).
    #[sqlx(default)]
    pub duration_p50_ms: f64,
    /// 95th percentile pull duration (ms).
    #[sqlx(default)]
    pub duration_p95_ms: f64,
}

/// A user's role. Each grants what the ones before it do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also acknowledges and silences alerts, edits the registry.
    Operator,
    /// Also manages users.
    Admin,
}

impl Role {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// Role.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// argon2 PHC string.
    pub password_hash: String,
    /// UBackup's focus_business list, JSON text.
    pub focus_business: String,
}

/// An alert to open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewAlert {
    /// Rule name.
    pub rule: String,
    /// What it is about: an instance key, a node id, a list name.
    pub subject: String,
    /// The instance, when it is about one.
    pub key: Option<InstanceKey>,
    /// Business.
    pub game_id: Option<i64>,
    /// Database host.
    pub game_server_ip: Option<String>,
    /// What is wrong, for people.
    pub message: String,
    /// The cause (`rule:subject`) this alert is held under (inhibition), if any.
    pub held_by: Option<String>,
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Alert {
    /// Id.
    pub id: i64,
    /// Rule name.
    pub rule: String,
    /// Subject.
    pub subject: String,
    /// Instance fields, when about one.
    pub server_id: Option<String>,
    /// Type.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub back_type: Option<String>,
    /// Instance number.
    pub instance: Option<i64>,
    /// Business.
    pub game_id: Option<i64>,
    /// Database host.
    pub game_server_ip: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Opened (ms).
    pub opened_ms: i64,
    /// Last refreshed (ms).
    pub updated_ms: i64,
    /// Resolved (ms).
    pub resolved_ms: Option<i64>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When.
    pub acked_ms: Option<i64>,
    /// Silenced until (ms).
    pub silenced_until_ms: Option<i64>,
    /// Who silenced it (none for silences older than the column, or set through the API
    /// before it recorded one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silenced_by: Option<String>,
    /// The cause (`rule:subject`) it is held under: listed on the cause's page, not notified
    /// on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AlertFilter {
    /// Only open ones.
    #[serde(default)]
    pub open: bool,
    /// Only this rule.
    pub rule: Option<String>,
    /// Only this business.
    pub business: Option<i64>,
    /// At most this many (newest first; default 1000).
    pub limit: Option<i64>,
    /// Skip this many first (paging).
    #[serde(default)]
    pub offset: i64,
    /// Only alerts in this state at `now_ms`.
    #[serde(default)]
    pub state: Option<AlertState>,
    /// The moment `state` is judged at (ms; silences end).
    #[serde(default)]
    pub now_ms: i64,
    /// Alerts of these businesses come first (a user's focus businesses).
    #[serde(default)]
    pub first_businesses: Vec<i64>,
    /// Only alerts held under this cause (`rule:subject`).
    #[serde(default)]
    pub held_by: Option<String>,
    /// Only alerts of this database host (`game_server_ip`).
    #[serde(default)]
    pub host: Option<String>,
    /// Only alerts with an id up to this one: a bulk action confirmed for the N alerts counted
    /// on its confirmation page does not also act on alerts opened after the count.
    #[serde(default)]
    pub max_id: Option<i64>,
}

/// The state of an alert at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Not resolved, not acknowledged, not silenced.
    Open,
    /// Not resolved, acknowledged, not silenced.
    Acked,
    /// Not resolved, silenced.
    Silenced,
    /// Resolved.
    Resolved,
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    /// When (ms).
    pub at_ms: i64,
    /// Who.
    #[sqlx(rename = "user_name")]
    pub user: String,
    /// What.
    pub action: String,
    /// Details (JSON text).
    pub detail: String,
}
