//! A pull job, whichever form it arrived in, and the versioned schema (`"v": 1`) that the
//! ubackup agent produces.
//!
//! The v1 schema keeps UBackup's field names where the meaning is the same, and fixes what the
//! old form could not say: a job id, the daemon port and user, an expected checksum, and times
//! in milliseconds throughout.
//!
//! ```json
//! {"v": 1, "job_id": "S1001-redis-6379-1700000000", "server_id": "S1001", "game_id": 12,
//!  "op_id": 0, "host": "10.1.2.3", "port": 873, "user": "backup",
//!  "module": "backup/redis_6379", "filename": "20231114/dump.rdb", "size": 1048576,
//!  "checksum": "sha256:9f86d0…", "back_type": "redis", "instance": 6379, "interval": 3600,
//!  "create_time_ms": 1700000000000, "last_all_filename": null, "last_all_time_ms": 0,
//!  "success": true, "log": "ok"}
//! ```

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fields::{object, Fields, MessageError};
use crate::legacy::LegacyJob;

/// The default rsync daemon port.
pub const RSYNC_PORT: u16 = 873;

/// Which form a job arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobForm {
    /// The UBackup client's message.
    Legacy,
    /// Our versioned schema, version 1.
    V1,
}

/// The algorithms a job may name for its expected checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HintAlgorithm {
    /// SHA-256.
    Sha256,
    /// MD5.
    Md5,
    /// XXH3, 64-bit.
    Xxh3,
    /// XXH3, 128-bit.
    Xxh128,
}

impl HintAlgorithm {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            HintAlgorithm::Sha256 => "sha256",
            HintAlgorithm::Md5 => "md5",
            HintAlgorithm::Xxh3 => "xxh3",
            HintAlgorithm::Xxh128 => "xxh128",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HintAlgorithm::Sha256 => 32,
            HintAlgorithm::Md5 | HintAlgorithm::Xxh128 => 16,
            HintAlgorithm::Xxh3 => 8,
        }
    }

    fn from_name(s: &str) -> Option<HintAlgorithm> {
        Some(match s {
            "sha256" => HintAlgorithm::Sha256,
            "md5" => HintAlgorithm::Md5,
            "xxh3" | "xxh64" => HintAlgorithm::Xxh3,
            "xxh128" => HintAlgorithm::Xxh128,
            _ => return None,
        })
    }
}

/// The checksum the producer measured on the database host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumHint {
    /// The algorithm.
    pub algorithm: HintAlgorithm,
    /// The digest, lower-case hex.
    pub hex: String,
}

impl fmt::Display for ChecksumHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl ChecksumHint {
    /// Parses `ALGORITHM:HEX`.
    pub fn parse(s: &str) -> Result<ChecksumHint, String> {
        let (name, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("expected ALGORITHM:HEX, got {s:?}"))?;
        let algorithm = HintAlgorithm::from_name(&name.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown algorithm {name:?} (sha256, md5, xxh3, xxh128)"))?;
        let hex = hex.to_ascii_lowercase();
        if hex.len() != algorithm.digest_len() * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{} needs {} hex digits, got {hex:?}",
                algorithm.name(),
                algorithm.digest_len() * 2
            ));
        }
        Ok(ChecksumHint { algorithm, hex })
    }
}

/// A validated pull job, whichever form it arrived in. Times are epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The form it arrived in.
    pub form: JobForm,
    /// The producer's job id (v1 only; legacy jobs get one from the puller).
    pub job_id: Option<String>,
    /// The database host's asset id.
    pub server_id: String,
    /// The business id.
    pub game_id: i64,
    /// Reserved id.
    pub op_id: i64,
    /// The host to pull from.
    pub host: IpAddr,
    /// The daemon port, if the message names one (the puller's configured port otherwise).
    pub port: Option<u16>,
    /// The daemon user, if the module needs authentication.
    pub user: Option<String>,
    /// rsync module plus sub-path, e.g. `backup/database_3306`.
    pub module_path: String,
    /// Backup file name relative to `module_path` (absent on failed runs).
    pub filename: Option<String>,
    /// Size in bytes measured on the database host.
    pub size: Option<u64>,
    /// The checksum measured on the database host.
    pub checksum: Option<ChecksumHint>,
    /// Backup type (mysql, redis, ssdb, ...).
    pub back_type: String,
    /// Instance number (usually the port).
    pub instance: i64,
    /// The producer's backup period in seconds.
    pub interval: Option<u64>,
    /// When the producer's run started.
    pub create_time_ms: i64,
    /// The full backup an incremental depends on.
    pub last_all_filename: Option<String>,
    /// When that full backup was made (0 if none).
    pub last_all_time_ms: i64,
    /// The backup this incremental was taken against when that is not the full itself: the
    /// previous incremental of an incremental-on-incremental chain (v1 only).
    pub prev_filename: Option<String>,
    /// When that previous backup's run started (0 if none).
    pub prev_time_ms: i64,
    /// Whether the backup script succeeded.
    pub success: bool,
    /// `ok`, or the producer's error text.
    pub log: String,
}

impl Job {
    /// Parses a message from the job queue: a v1 message (it has a `"v"` key) or the UBackup
    /// client's message. Every problem found is reported.
    pub fn parse(bytes: &[u8]) -> Result<Job, MessageError> {
        let obj = object(bytes)?;
        match obj.get("v") {
            None => Ok(LegacyJob::parse(bytes)?.into()),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => parse_v1(&obj),
            Some(other) => Err(MessageError::Fields(vec![crate::FieldProblem {
                field: "v",
                problem: format!("unsupported schema version {other}"),
            }])),
        }
    }

    /// The rsync source path: `module_path/filename`.
    pub fn source_path(&self) -> Option<String> {
        self.filename
            .as_ref()
            .map(|f| format!("{}/{}", self.module_path.trim_end_matches('/'), f))
    }

    /// The v1 encoding of this job (what the agent pushes).
    pub fn to_v1_json(&self) -> String {
        let wire = JobV1Wire {
            v: 1,
            job_id: self.job_id.clone(),
            server_id: self.server_id.clone(),
            game_id: self.game_id,
            op_id: self.op_id,
            host: self.host.to_string(),
            port: self.port,
            user: self.user.clone(),
            module: self.module_path.clone(),
            filename: self.filename.clone(),
            size: self.size,
            checksum: self.checksum.as_ref().map(|c| c.to_string()),
            back_type: self.back_type.clone(),
            instance: self.instance,
            interval: self.interval,
            create_time_ms: self.create_time_ms,
            last_all_filename: self.last_all_filename.clone(),
            last_all_time_ms: self.last_all_time_ms,
            prev_filename: self.prev_filename.clone(),
            prev_time_ms: self.prev_time_ms,
            success: self.success,
            log: self.log.clone(),
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct JobV1Wire {
    v: u32,
    job_id: Option<String>,
    server_id: String,
    game_id: i64,
    op_id: i64,
    host: String,
    port: Option<u16>,
    user: Option<String>,
    module: String,
    filename: Option<String>,
    size: Option<u64>,
    checksum: Option<String>,
    back_type: String,
    instance: i64,
    interval: Option<u64>,
    create_time_ms: i64,
    last_all_filename: Option<String>,
    last_all_time_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_filename: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    prev_time_ms: i64,
    success: bool,
    log: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl From<LegacyJob> for Job {
    fn from(j: LegacyJob) -> Job {
        Job {
            form: JobForm::Legacy,
            job_id: None,
            server_id: j.server_id,
            game_id: j.game_id,
            op_id: j.op_id,
            // LegacyJob::parse checked it is an address.
            host: j
                .game_server_ip
                .parse()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            port: None,
            user: None,
            module_path: j.rsync_model,
            filename: j.filename,
            size: j.size,
            checksum: None,
            back_type: j.back_type,
            instance: j.instance,
            interval: j.interval,
            create_time_ms: j.create_time.saturating_mul(1000),
            last_all_filename: j.last_all_filename,
            last_all_time_ms: j.last_all_time.saturating_mul(1000),
            prev_filename: None,
            prev_time_ms: 0,
            success: j.success,
            log: j.log,
        }
    }
}

fn is_job_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn is_user(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn parse_v1(obj: &serde_json::Map<String, Value>) -> Result<Job, MessageError> {
    let mut f = Fields {
        obj,
        problems: Vec::new(),
    };
    let job_id = f.string("job_id", true);
    if let Some(id) = &job_id {
        if !is_job_id(id) {
            f.bad("job_id", "1-128 characters of A-Z a-z 0-9 . _ : -");
        }
    }
    let server_id = f.string("server_id", true);
    let game_id = f.int("game_id", true);
    let op_id = f.int("op_id", false).unwrap_or(0);
    let host = f.ip("host");
    let port = match f.int("port", false) {
        None => Ok(None),
        Some(p) => match u16::try_from(p) {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => {
                f.bad("port", format!("not a TCP port: {p}"));
                Err(())
            }
        },
    };
    let user = f.string("user", false);
    if let Some(u) = &user {
        if !is_user(u) {
            f.bad("user", format!("not a daemon user name: {u:?}"));
        }
    }
    let module_path = f.safe_name("module", true);
    let success = f.boolean("success");
    let filename = f.safe_name("filename", success == Some(true));
    let size = f.int("size", false);
    if size.is_some_and(|s| s < 0) {
        f.bad("size", "negative");
    }
    let checksum = match f.string("checksum", false) {
        None => None,
        Some(s) => match ChecksumHint::parse(&s) {
            Ok(c) => Some(c),
            Err(e) => {
                f.bad("checksum", e);
                None
            }
        },
    };
    let back_type = f.safe_name("back_type", true);
    if back_type.as_deref().is_some_and(|t| t.contains('/')) {
        f.bad("back_type", "must be one path component");
    }
    let instance = f.int("instance", true);
    let interval = f.int("interval", false);
    if interval.is_some_and(|i| i <= 0) {
        f.bad("interval", "must be positive");
    }
    let create_time_ms = f.int("create_time_ms", true);
    let last_all_filename = f.safe_name("last_all_filename", false);
    let last_all_time_ms = f.int("last_all_time_ms", false).unwrap_or(0);
    let prev_filename = f.safe_name("prev_filename", false);
    let prev_time_ms = f.int("prev_time_ms", false).unwrap_or(0);
    let log = f.string("log", false).unwrap_or_default();
    if !f.problems.is_empty() {
        return Err(MessageError::Fields(f.problems));
    }
    match (
        server_id,
        game_id,
        host,
        port,
        module_path,
        success,
        back_type,
        instance,
        create_time_ms,
    ) {
        (
            Some(server_id),
            Some(game_id),
            Some(host),
            Ok(port),
            Some(module_path),
            Some(success),
            Some(back_type),
            Some(instance),
            Some(create_time_ms),
        ) => Ok(Job {
            form: JobForm::V1,
            job_id,
            server_id,
            game_id,
            op_id,
            host,
            port,
            user,
            module_path,
            filename,
            size: size.map(|s| s as u64),
            checksum,
            back_type,
            instance,
            interval: interval.map(|i| i as u64),
            create_time_ms,
            last_all_filename,
            last_all_time_ms,
            prev_filename,
            prev_time_ms,
            success,
            log,
        }),
        _ => Err(MessageError::Fields(f.problems)),
    }
}

/// What the puller learned about a job that it could not parse: enough of the message to
/// address a failure result to the right instance, whatever else is wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobIdentity {
    /// `server_id`, if it is there.
    pub server_id: Option<String>,
    /// `back_type`, if it is there.
    pub back_type: Option<String>,
    /// `instance`, if it is an integer.
    pub instance: Option<i64>,
    /// `game_id`, if it is an integer.
    pub game_id: Option<i64>,
    /// The host, as given.
    pub host: Option<String>,
    /// `filename`, as given.
    pub filename: Option<String>,
    /// `job_id`, if it is there.
    pub job_id: Option<String>,
    /// `interval`, if it is an integer.
    pub interval: Option<i64>,
}

impl JobIdentity {
    /// Reads what it can from `bytes`; never fails. Text is cut to 256 bytes.
    pub fn sniff(bytes: &[u8]) -> JobIdentity {
        let Ok(obj) = object(bytes) else {
            return JobIdentity::default();
        };
        let text = |k: &str| match obj.get(k) {
            Some(Value::String(s)) => Some(cut(s)),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let int = |k: &str| match obj.get(k) {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        JobIdentity {
            server_id: text("server_id"),
            back_type: text("back_type"),
            instance: int("instance"),
            game_id: int("game_id"),
            host: text("host").or_else(|| text("game_server_ip")),
            filename: text("filename"),
            job_id: text("job_id"),
            interval: int("interval"),
        }
    }
}

fn cut(s: &str) -> String {
    crate::truncate_str(s, 256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> Job {
        Job {
            form: JobForm::V1,
            job_id: Some("S1-redis-6379-1".into()),
            server_id: "S1".into(),
            game_id: 12,
            op_id: 0,
            host: "10.1.2.3".parse().unwrap(),
            port: Some(8873),
            user: Some("backup".into()),
            module_path: "backup/redis_6379".into(),
            filename: Some("2023/dump.rdb".into()),
            size: Some(1 << 20),
            checksum: Some(ChecksumHint::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap()),
            back_type: "redis".into(),
            instance: 6379,
            interval: Some(3600),
            create_time_ms: 1_700_000_000_123,
            last_all_filename: None,
            last_all_time_ms: 0,
            prev_filename: None,
            prev_time_ms: 0,
            success: true,
            log: "ok".into(),
        }
    }

    #[test]
    fn v1_roundtrips() {
        let j = v1();
        assert_eq!(Job::parse(j.to_v1_json().as_bytes()).unwrap(), j);
    }

    #[test]
    fn v1_roundtrips_an_incremental_on_incremental_chain() {
        let j = Job {
            last_all_filename: Some("full/20231114.xb".into()),
            last_all_time_ms: 1_699_900_000_000,
            prev_filename: Some("incr/20231114-01.xb".into()),
            prev_time_ms: 1_699_903_600_000,
            ..v1()
        };
        let text = j.to_v1_json();
        assert!(
            text.contains(r#""prev_filename":"incr/20231114-01.xb""#),
            "{text}"
        );
        assert_eq!(Job::parse(text.as_bytes()).unwrap(), j);
    }

    #[test]
    fn v1_rejects_a_prev_filename_that_escapes() {
        let mut j: serde_json::Value = serde_json::from_str(&v1().to_v1_json()).unwrap();
        j["prev_filename"] = "../../etc/passwd".into();
        let err = Job::parse(j.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("prev_filename"), "{err}");
    }

    #[test]
    fn legacy_messages_become_jobs_with_times_in_ms() {
        let text = r#"{"filename": "a.rdb", "last_all_filename": null, "last_all_time": 7, "size": 3, "log": "ok", "create_time": 1475280000, "success": true, "server_id": "S1001", "game_id": 12, "op_id": 0, "game_server_ip": "10.1.2.3", "back_type": "redis", "instance": 6379, "rsync_model": "backup/redis_6379", "interval": 3600}"#;
        let j = Job::parse(text.as_bytes()).unwrap();
        assert_eq!(j.form, JobForm::Legacy);
        assert_eq!(j.create_time_ms, 1_475_280_000_000);
        assert_eq!(j.last_all_time_ms, 7000);
        assert_eq!(j.port, None);
        assert_eq!(j.source_path().as_deref(), Some("backup/redis_6379/a.rdb"));
    }

    #[test]
    fn v1_reports_every_problem() {
        let mut j = serde_json::from_str::<Value>(&v1().to_v1_json()).unwrap();
        j["host"] = "example.com".into();
        j["filename"] = "../x".into();
        j["module"] = "/etc".into();
        j["port"] = 70000.into();
        j["checksum"] = "sha256:zz".into();
        j["user"] = "a b".into();
        let Err(MessageError::Fields(p)) = Job::parse(j.to_string().as_bytes()) else {
            panic!("expected field problems");
        };
        let fields: Vec<_> = p.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["host", "port", "user", "module", "filename", "checksum"]
        );
    }

    #[test]
    fn unknown_schema_versions_are_refused() {
        let e = Job::parse(br#"{"v": 2}"#).unwrap_err();
        assert!(
            e.to_string().contains("unsupported schema version 2"),
            "{e}"
        );
    }

    #[test]
    fn checksum_hints_check_length_and_algorithm() {
        assert!(ChecksumHint::parse("md5:00112233445566778899aabbccddeeff").is_ok());
        assert!(ChecksumHint::parse("md5:0011").is_err());
        assert!(ChecksumHint::parse("crc32:00112233").is_err());
        assert!(ChecksumHint::parse("nocolon").is_err());
    }

    #[test]
    fn sniff_reads_what_it_can() {
        let id = JobIdentity::sniff(
            br#"{"server_id": 7, "instance": "3306", "back_type": "mysql", "game_server_ip": "x"}"#,
        );
        assert_eq!(id.server_id.as_deref(), Some("7"));
        assert_eq!(id.instance, Some(3306));
        assert_eq!(id.host.as_deref(), Some("x"));
        assert_eq!(JobIdentity::sniff(b"\xff not json"), JobIdentity::default());
    }
}
