//! Life-cycle events a node publishes about files it already stored, on the same message list
//! as pull results: a file deleted by retention, or a file that a scrub found corrupt or
//! unreadable. A consumer tells an event from a result by its `"event"` key, which no result
//! has.
//!
//! ```json
//! {"event": "expired", "node_id": "node-1", "back_server_ip": "10.0.0.5",
//!  "server_id": "S1001", "type": "mysql", "instance": 3306,
//!  "file_path": "/data/backup/mysql/10.1.2/3", "filename": "full/20231114.xb",
//!  "job_id": "S1001-mysql-3306-1699900000", "size": 1048576,
//!  "checksum": "xxh128:…", "at_ms": 1700000000000, "reason": "older than 7 days"}
//! ```
//!
//! `file_path` and `filename` are those of the result that announced the file, so that a
//! catalog can find the row by (`node_id`, `file_path`, `filename`) even for UBackup-format jobs
//! whose `job_id` the node derived.

use serde::{Deserialize, Serialize};

use crate::fields::{is_safe_relative_name, MAX_MESSAGE_BYTES};

/// What happened to a stored file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// Deleted by the retention policy.
    Expired,
    /// Its bytes no longer match the checksum recorded when it was pulled.
    Corrupt,
    /// It could not be read (missing, permission, I/O error).
    Unreadable,
}

impl EventKind {
    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Expired => "expired",
            EventKind::Corrupt => "corrupt",
            EventKind::Unreadable => "unreadable",
        }
    }
}

/// One life-cycle event about a stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// What happened.
    pub event: EventKind,
    /// The node that holds (held) the file.
    pub node_id: String,
    /// That node's address, as in its results.
    pub back_server_ip: String,
    /// The database host's asset id.
    pub server_id: String,
    /// Backup type.
    #[serde(rename = "type")]
    pub back_type: String,
    /// Instance number.
    pub instance: i64,
    /// The destination directory, as in the result.
    pub file_path: String,
    /// The file name, as in the result.
    pub filename: String,
    /// The job id of the pull that stored it, when known.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Size recorded when it was stored.
    #[serde(default)]
    pub size: Option<u64>,
    /// `ALGORITHM:HEX` recorded when it was stored.
    #[serde(default)]
    pub checksum: Option<String>,
    /// When the event happened (epoch ms).
    pub at_ms: i64,
    /// Why: the retention rule, or the scrub's finding.
    pub reason: String,
}

/// Why a message is not a valid event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("event of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not JSON of the event shape.
    #[error("not a node event: {0}")]
    Invalid(#[from] serde_json::Error),
    /// Not a JSON object (serde would read a struct from an array too).
    #[error("not a node event: not a JSON object")]
    NotAnObject,
    /// `filename` is absolute, has `..`, `.` or empty components, or a NUL or line break: a
    /// catalog joins it under `file_path`.
    #[error("not a node event: unsafe file name {0:?}")]
    UnsafeName(String),
}

/// Whether the first non-blank byte opens an object.
fn is_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Whether a message from the results list is an event (it has a top-level `"event"` key)
/// rather than a pull result. Cheap: it looks only at the top-level keys.
pub fn is_event(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        event: Option<serde::de::IgnoredAny>,
    }
    bytes.len() <= MAX_MESSAGE_BYTES
        && is_object(bytes)
        && serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| p.event.is_some())
}

/// Parses an event.
pub fn parse_event(bytes: &[u8]) -> Result<NodeEvent, EventError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(EventError::TooLarge(bytes.len()));
    }
    if !is_object(bytes) {
        return Err(EventError::NotAnObject);
    }
    let e: NodeEvent = serde_json::from_slice(bytes)?;
    if !is_safe_relative_name(&e.filename) {
        return Err(EventError::UnsafeName(e.filename));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeEvent {
        NodeEvent {
            event: EventKind::Corrupt,
            node_id: "node-1".into(),
            back_server_ip: "10.0.0.5".into(),
            server_id: "S1001".into(),
            back_type: "mysql".into(),
            instance: 3306,
            file_path: "/data/backup/mysql/10.1.2/3".into(),
            filename: "full/20231114.xb".into(),
            job_id: Some("S1001-mysql-3306-1".into()),
            size: Some(1 << 20),
            checksum: Some(format!("xxh128:{}", "ab".repeat(16))),
            at_ms: 1_700_000_000_000,
            reason: "xxh128 differs".into(),
        }
    }

    #[test]
    fn roundtrips_and_is_told_from_a_result() {
        let e = sample();
        let text = serde_json::to_vec(&e).unwrap();
        assert!(is_event(&text));
        assert_eq!(parse_event(&text).unwrap(), e);
        let result = serde_json::to_vec(&crate::PullResult::default()).unwrap();
        assert!(!is_event(&result));
        assert!(!is_event(b"not json"));
        assert!(!is_event(b"[1,2]"));
    }

    #[test]
    fn an_array_is_neither_an_event_nor_parsed_as_one() {
        // Found when stating the event fuzz target's rules: serde reads a struct from a JSON
        // array, so an array of the 13 fields parsed as an event while is_event (a one-field
        // probe) said it was a result; a consumer that sorts with is_event misfiles it.
        let e = sample();
        let array = serde_json::to_vec(&serde_json::json!([
            e.event,
            e.node_id,
            e.back_server_ip,
            e.server_id,
            e.back_type,
            e.instance,
            e.file_path,
            e.filename,
            e.job_id,
            e.size,
            e.checksum,
            e.at_ms,
            e.reason
        ]))
        .unwrap();
        // What serde alone makes of it:
        assert_eq!(
            serde_json::from_slice::<NodeEvent>(&array).unwrap(),
            sample()
        );
        assert!(!is_event(&array));
        assert!(matches!(parse_event(&array), Err(EventError::NotAnObject)));
        assert!(!is_event(br#"["expired"]"#));
        // Blanks before the object are fine.
        let mut padded = b" \n\t".to_vec();
        padded.extend_from_slice(&serde_json::to_vec(&sample()).unwrap());
        assert!(is_event(&padded));
        assert_eq!(parse_event(&padded).unwrap(), sample());
    }

    #[test]
    fn rejects_a_filename_that_leaves_its_directory() {
        // Found when stating the event fuzz target's rules: parse_event took any filename,
        // and a catalog joins it under file_path.
        for name in ["../../etc/passwd", "/etc/passwd", "a/../../b", "", "a\nb"] {
            let mut e = sample();
            e.filename = name.into();
            let text = serde_json::to_vec(&e).unwrap();
            assert!(
                matches!(parse_event(&text), Err(EventError::UnsafeName(ref n)) if n == name),
                "{name:?}"
            );
        }
    }

    #[test]
    fn rejects_unknown_kinds_and_oversized_messages() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["event"] = "exploded".into();
        assert!(parse_event(v.to_string().as_bytes()).is_err());
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(parse_event(&big), Err(EventError::TooLarge(_))));
    }
}
