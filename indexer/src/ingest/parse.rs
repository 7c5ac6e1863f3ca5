//! One message from the results list → a catalog item, or the reason it is invalid.
//!
//! Results from our nodes carry `job_id` and `node_id`; results from UBackup's own nodes (still
//! running during a migration) have neither, so those get a job id derived from their natural
//! key (server_id, type, instance, create_time, filename, back_server_ip, log), and the node is
//! named by its address.

use serde_json::{Map, Value};
use sha2::Digest as _;
use ubackup_messages::{is_event, parse_event, ILLEGAL_PREFIX};

use crate::catalog::{Ingest, Record};

/// Latest time accepted: 9999-12-31 (a partition per month must be computable).
pub const MAX_TIME_MS: i64 = 253_402_214_400_000;

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// Over the size limit.
    #[error("message of {got} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        got: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// An event that does not parse.
    #[error("invalid node event: {0}")]
    Event(String),
    /// Fields missing or malformed (all of them listed).
    #[error("invalid result: {}", .0.join("; "))]
    Fields(Vec<String>),
    /// A field that the registry's and the pages' validator refuses (a 5,000-byte server id,
    /// a type starting with a tab or `=`): the same rule as every other way in.
    #[error("illegal field: {0}")]
    Field(crate::validate::FieldError),
}

impl Invalid {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Invalid::TooLarge { .. } => "too_large",
            Invalid::NotJson(_) => "not_json",
            Invalid::Event(_) => "bad_event",
            Invalid::Fields(_) => "fields",
            Invalid::Field(_) => "illegal_field",
        }
    }
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    bad: Vec<String>,
}

impl Fields<'_> {
    fn int(&mut self, k: &str, required: bool) -> Option<i64> {
        match self.obj.get(k) {
            None | Some(Value::Null) => {
                if required {
                    self.bad.push(format!("{k}: missing"));
                }
                None
            }
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) => Some(v),
                // Float sizes from scripts that are not Python's getsize.
                None => match n.as_f64() {
                    Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e18 => {
                        Some(f as i64)
                    }
                    _ => {
                        self.bad.push(format!("{k}: {n} is not a 64-bit integer"));
                        None
                    }
                },
            },
            Some(Value::String(s)) => match s.trim().parse::<i64>() {
                Ok(v) => Some(v),
                Err(_) if s == "None" && !required => None,
                Err(_) => {
                    self.bad.push(format!("{k}: {s:?} is not an integer"));
                    None
                }
            },
            Some(Value::Bool(b)) => Some(i64::from(*b)),
            Some(other) => {
                self.bad
                    .push(format!("{k}: expected an integer, got {other}"));
                None
            }
        }
    }

    fn string(&mut self, k: &str, required: bool) -> Option<String> {
        match self.obj.get(k) {
            None | Some(Value::Null) => {
                if required {
                    self.bad.push(format!("{k}: missing"));
                }
                None
            }
            Some(Value::String(s)) if s == "None" && !required => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.bad
                    .push(format!("{k}: expected a string, got {other}"));
                None
            }
        }
    }

    fn time(&mut self, k: &str, required: bool) -> i64 {
        match self.int(k, required) {
            Some(v) if (0..=MAX_TIME_MS).contains(&v) => v,
            Some(v) => {
                self.bad.push(format!("{k}: {v} is not a time in ms"));
                0
            }
            None => 0,
        }
    }

    fn count(&mut self, k: &str) -> i64 {
        match self.int(k, false) {
            Some(v) if v >= 0 => v,
            Some(v) => {
                self.bad.push(format!("{k}: {v} is negative"));
                0
            }
            None => 0,
        }
    }
}

/// Parses one message from the results list.
pub fn parse_message(raw: &[u8], max_bytes: usize) -> Result<Ingest, Invalid> {
    if raw.len() > max_bytes {
        return Err(Invalid::TooLarge {
            got: raw.len(),
            limit: max_bytes,
        });
    }
    // `is_event` also says yes to a one-element JSON array (serde reads a struct from a
    // sequence), so only an object is asked.
    let is_object = raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if is_object && is_event(raw) {
        return parse_event(raw)
            .map(|e| Ingest::Event(Box::new(e)))
            .map_err(|e| Invalid::Event(e.to_string()));
    }
    let v: Value = serde_json::from_slice(raw).map_err(|e| Invalid::NotJson(e.to_string()))?;
    let Value::Object(obj) = v else {
        return Err(Invalid::NotJson("not an object".into()));
    };
    parse_result_object(&obj).map(|r| Ingest::Result(Box::new(r)))
}

fn parse_result_object(obj: &Map<String, Value>) -> Result<Record, Invalid> {
    let mut f = Fields {
        obj,
        bad: Vec::new(),
    };
    let log = f.string("log", true).unwrap_or_default();
    let illegal = log.starts_with(ILLEGAL_PREFIX);
    // A node's "illegal message" result may not name its instance: it could not parse it.
    let server_id = f.string("server_id", !illegal);
    let back_type = f.string("type", !illegal);
    let instance = f.int("instance", !illegal);
    let back_server_ip = f.string("back_server_ip", true).unwrap_or_default();
    let create_time = f.time("create_time", !illegal);
    let rsync_time = f.time("rsync_time", false);
    let succeed = match f.int("succeed", true) {
        Some(0) | None => false,
        Some(1) => true,
        Some(v) => {
            f.bad.push(format!("succeed: {v} is neither 0 nor 1"));
            false
        }
    };
    let size = f.int("size", false);
    if size.is_some_and(|s| s < 0) {
        f.bad.push("size: negative".into());
    }
    let filename = f.string("filename", false);
    let file_path = f.string("file_path", false);
    let game_server_ip = f.string("game_server_ip", false);
    let mut r = Record {
        job_id: String::new(),
        server_id: server_id.unwrap_or_default(),
        back_type: back_type.unwrap_or_default(),
        instance: instance.unwrap_or(0),
        game_id: f.int("game_id", false),
        op_id: f.int("op_id", false),
        interval_secs: f.int("interval", false).filter(|i| *i > 0),
        game_server_ip,
        node_id: f
            .string("node_id", false)
            .unwrap_or_else(|| back_server_ip.clone()),
        back_server_ip,
        file_path,
        filename,
        create_time,
        rsync_time,
        size,
        last_all_filename: f.string("last_all_filename", false),
        last_all_time: f.time("last_all_time", false),
        prev_filename: f.string("prev_filename", false),
        prev_time: f.time("prev_time", false),
        succeed,
        log,
        checksum: f.string("checksum", false),
        checksum_algorithm: f.string("checksum_algorithm", false),
        expected_size: f.int("expected_size", false),
        size_mismatch: f.int("size_mismatch", false).unwrap_or(0) != 0,
        bytes_received: f.count("bytes_received"),
        literal_bytes: f.count("literal_bytes"),
        matched_bytes: f.count("matched_bytes"),
        basis: f.string("basis", false),
        attempts: f.count("attempts"),
        requeues: f.count("requeues"),
        queue: f.string("queue", false),
        raw_excerpt: f.string("raw_excerpt", false),
        taken_ms: f.time("taken_ms", false),
        duration_ms: f.count("duration_ms"),
        illegal,
    };
    if illegal && r.create_time == 0 {
        r.create_time = r.rsync_time;
    }
    r.job_id = match f.string("job_id", false) {
        Some(j) if !j.is_empty() => j,
        _ => natural_key(&r),
    };
    if !f.bad.is_empty() {
        return Err(Invalid::Fields(f.bad));
    }
    check_fields(&mut r).map_err(Invalid::Field)?;
    Ok(r)
}

/// Puts every text field of a result through its validator in [`crate::validate`] (the one
/// forms, API and registry import use). A result that fails is refused; a node's own
/// "illegal message" report is kept instead (it is how an illegal job reaches the `illegal`
/// alert) with each failing field emptied, so its text never reaches a page or an export.
fn check_fields(r: &mut Record) -> Result<(), crate::validate::FieldError> {
    use crate::validate::{self as v, FieldError};
    let illegal = r.illegal;
    let keep = |res: Result<(), FieldError>, value: &mut String| -> Result<(), FieldError> {
        match res {
            Ok(()) => Ok(()),
            Err(_) if illegal => {
                value.clear();
                Ok(())
            }
            Err(e) => Err(e),
        }
    };
    // A node's report may lack its identity: empty is its "unknown" there.
    let key = |field, s: &str, max| {
        if illegal && s.is_empty() {
            Ok(())
        } else {
            v::key(field, s, max)
        }
    };
    let res = key("server_id", &r.server_id, v::MAX_SERVER_ID_BYTES);
    keep(res, &mut r.server_id)?;
    let res = key("type", &r.back_type, v::MAX_TYPE_KEY_BYTES);
    keep(res, &mut r.back_type)?;
    // Empty is allowed where it was before (a node that does not know its own address).
    let ident = |field, s: &str| {
        if s.is_empty() {
            Ok(())
        } else {
            v::identifier(field, s, v::MAX_IDENTIFIER_BYTES)
        }
    };
    for (field, value) in [
        ("job_id", &mut r.job_id),
        ("back_server_ip", &mut r.back_server_ip),
        ("node_id", &mut r.node_id),
    ] {
        let res = ident(field, value);
        keep(res, value)?;
    }
    for (field, value) in [
        ("game_server_ip", &mut r.game_server_ip),
        ("checksum", &mut r.checksum),
        ("checksum_algorithm", &mut r.checksum_algorithm),
        ("queue", &mut r.queue),
    ] {
        if let Some(s) = value {
            let res = ident(field, s);
            keep(res, s)?;
        }
    }
    for (field, value) in [
        ("file_path", &mut r.file_path),
        ("filename", &mut r.filename),
        ("last_all_filename", &mut r.last_all_filename),
        ("prev_filename", &mut r.prev_filename),
        ("basis", &mut r.basis),
    ] {
        if let Some(s) = value {
            let res = v::path(field, s);
            keep(res, s)?;
        }
    }
    if let Some(s) = &mut r.raw_excerpt {
        let res = v::text("raw_excerpt", s, v::MAX_PATH_BYTES);
        keep(res, s)?;
    }
    if illegal && r.job_id.is_empty() {
        r.job_id = natural_key(r);
    }
    Ok(())
}

/// The job id of a result that has none: a hash of its natural key.
fn natural_key(r: &Record) -> String {
    let mut h = sha2::Sha256::new();
    for part in [
        r.server_id.as_str(),
        r.back_type.as_str(),
        &r.instance.to_string(),
        &r.create_time.to_string(),
        r.filename.as_deref().unwrap_or(""),
        &r.back_server_ip,
        &r.log,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let hex: String = d.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("n-{hex}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn legacy() -> Value {
        // A result as UBackup's uuzubackup_server.py publishes it (compat §A.3).
        serde_json::json!({
            "interval": 3600, "server_id": "S1", "game_id": 7, "op_id": 0,
            "game_server_ip": "10.1.2.3", "instance": 3306, "back_server_ip": "10.0.0.5",
            "file_path": "/data/mysql/10.1.2/3", "filename": "full.xb",
            "create_time": 1_700_000_000_000i64, "rsync_time": 1_700_000_100_000i64,
            "size": 1024, "last_all_filename": "None", "last_all_time": 0, "succeed": 1,
            "log": "ok", "type": "mysql"
        })
    }

    fn result(raw: &[u8]) -> Record {
        match parse_message(raw, 65536) {
            Ok(Ingest::Result(r)) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn accepts_ubackup_results_with_a_stable_natural_key() {
        let raw = legacy().to_string();
        let r = result(raw.as_bytes());
        assert!(r.job_id.starts_with("n-"));
        assert_eq!(r.node_id, "10.0.0.5");
        assert_eq!(r.last_all_filename, None);
        assert_eq!(r.job_id, result(raw.as_bytes()).job_id);
    }

    #[test]
    fn accepts_our_results() {
        let p = ubackup_messages::PullResult {
            server_id: Some("S1".into()),
            back_type: Some("mysql".into()),
            instance: Some(1),
            job_id: "j1".into(),
            node_id: "n1".into(),
            back_server_ip: "10.0.0.5".into(),
            create_time: 5,
            succeed: 1,
            log: "ok".into(),
            last_all_filename: "None".into(),
            prev_filename: Some("inc1".into()),
            ..Default::default()
        };
        let r = result(&serde_json::to_vec(&p).unwrap());
        assert_eq!(r.job_id, "j1");
        assert_eq!(r.prev_filename.as_deref(), Some("inc1"));
        assert!(r.succeed);
    }

    #[test]
    fn a_raw_excerpt_is_carried_and_bounded() {
        let mut v = legacy();
        v["raw_excerpt"] = "{\\\"filename\\\": 3".into();
        assert_eq!(
            result(v.to_string().as_bytes()).raw_excerpt.as_deref(),
            Some("{\\\"filename\\\": 3")
        );
        // A control character (the node escapes them) or more than 4 KiB is refused.
        v["raw_excerpt"] = "a\nb".into();
        assert!(matches!(
            parse_message(v.to_string().as_bytes(), 65536),
            Err(Invalid::Field(_))
        ));
        v["raw_excerpt"] = "x".repeat(5000).into();
        assert!(matches!(
            parse_message(v.to_string().as_bytes(), 65536),
            Err(Invalid::Field(_))
        ));
    }

    #[test]
    fn rejects_with_every_reason() {
        assert!(matches!(
            parse_message(b"not json", 65536),
            Err(Invalid::NotJson(_))
        ));
        assert!(matches!(
            parse_message(b"[1]", 65536),
            Err(Invalid::NotJson(_))
        ));
        assert!(matches!(
            parse_message(&[b' '; 300], 256),
            Err(Invalid::TooLarge { got: 300, .. })
        ));
        let mut v = legacy();
        v.as_object_mut().unwrap().remove("server_id");
        v["succeed"] = 3.into();
        v["create_time"] = i64::MAX.into();
        let Err(Invalid::Fields(f)) = parse_message(v.to_string().as_bytes(), 65536) else {
            panic!()
        };
        assert_eq!(f.len(), 3, "{f:?}");
        let e = serde_json::json!({"event": "exploded"}).to_string();
        assert!(matches!(
            parse_message(e.as_bytes(), 65536),
            Err(Invalid::Event(_))
        ));
    }

    #[test]
    fn refuses_fields_that_the_registry_refuses() {
        let bad: [(&str, Value); 6] = [
            ("server_id", Value::from("S".repeat(5000))),
            ("server_id", Value::from("=HYPERLINK(\"http://x\")")),
            ("type", Value::from("\t=cmd|' /C calc'!A0")),
            ("node_id", Value::from("n\u{1b}[31m")),
            ("filename", Value::from("f\r\n.xb")),
            ("game_server_ip", Value::from(" 10.1.2.3")),
        ];
        for (k, val) in bad {
            let mut v = legacy();
            v[k] = val;
            match parse_message(v.to_string().as_bytes(), 65536) {
                Err(e @ Invalid::Field(_)) => {
                    assert_eq!(e.kind(), "illegal_field");
                    assert!(e.to_string().contains(k), "{e}");
                }
                other => panic!("{k}: {other:?}"),
            }
        }
        // A business id is a number: 5,000 digits is no business.
        let mut v = legacy();
        v["game_id"] = Value::from("9".repeat(5000));
        assert!(matches!(
            parse_message(v.to_string().as_bytes(), 65536),
            Err(Invalid::Fields(_))
        ));
    }

    #[test]
    fn a_nodes_illegal_report_is_kept_without_its_bad_fields() {
        let v = serde_json::json!({"back_server_ip": "10.0.0.5", "rsync_time": 9,
            "succeed": 0, "log": "illegal message: server_id: too long",
            "server_id": "\t=cmd", "type": "mysql", "instance": 1, "create_time": 0});
        let r = result(v.to_string().as_bytes());
        assert!(r.illegal);
        assert_eq!(r.server_id, "");
        assert_eq!(r.back_type, "mysql");
        assert!(!r.job_id.is_empty());
    }

    #[test]
    fn illegal_results_need_no_identity() {
        let v = serde_json::json!({"back_server_ip": "10.0.0.5", "rsync_time": 9,
            "succeed": 0, "log": "illegal message: not JSON", "create_time": 0});
        let r = result(v.to_string().as_bytes());
        assert!(r.illegal);
        assert_eq!(r.create_time, 9);
    }
}
