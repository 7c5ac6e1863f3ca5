//! The message a UBackup client (`uuzuback_client.py`) pushes onto the job queue, accepted as
//! it is so that existing fleets keep working unchanged.

use serde::{Deserialize, Serialize};

use crate::fields::{is_safe_relative_name, object, Fields, MessageError};

/// A job message as the UBackup client pushes it (one per instance per run).
///
/// Field meanings follow the UBackup client; times are epoch seconds as the client sends them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyJob {
    /// Backup file name, relative to the instance's backup directory (null on early failures).
    pub filename: Option<String>,
    /// The full backup this incremental depends on (null for full backups).
    pub last_all_filename: Option<String>,
    /// Epoch seconds of the client run that produced that full backup (0 if none).
    pub last_all_time: i64,
    /// Size in bytes measured on the database host.
    pub size: Option<u64>,
    /// `ok`, or the error text.
    pub log: String,
    /// Epoch seconds when the client run started.
    pub create_time: i64,
    /// Whether the backup script succeeded.
    pub success: bool,
    /// The database host's asset id.
    pub server_id: String,
    /// The business id.
    pub game_id: i64,
    /// Reserved id.
    pub op_id: i64,
    /// The address the puller pulls from.
    pub game_server_ip: String,
    /// Backup type (mysql, redis, ssdb, ...).
    pub back_type: String,
    /// Instance number (usually the port).
    pub instance: i64,
    /// rsync daemon module plus sub-path, e.g. `backup/database_3306`.
    pub rsync_model: String,
    /// The client's backup period in seconds.
    pub interval: Option<u64>,
}

impl LegacyJob {
    /// Parses and validates a message popped from the queue.
    pub fn parse(bytes: &[u8]) -> Result<LegacyJob, MessageError> {
        let obj = object(bytes)?;
        let obj = &obj;
        let mut f = Fields {
            obj,
            problems: Vec::new(),
        };
        let success = f.boolean("success");
        // A failed run may name no file as null or as "" (both mean none); a success needs one.
        let filename = f
            .string("filename", false)
            .filter(|n| !n.is_empty() || success == Some(true));
        let last_all_filename = f.string("last_all_filename", false);
        let last_all_time = f.int("last_all_time", false).unwrap_or(0);
        let size = f.int("size", false);
        let log = f.string("log", false).unwrap_or_default();
        let create_time = f.int("create_time", true);
        let server_id = f.string("server_id", true);
        let game_id = f.int("game_id", true);
        let op_id = f.int("op_id", false).unwrap_or(0);
        let game_server_ip = f.string("game_server_ip", true);
        let back_type = f.string("back_type", true);
        let instance = f.int("instance", true);
        let rsync_model = f.string("rsync_model", true);
        let interval = f.int("interval", false);
        // Checked on failed runs too: a failure result carries the name, and whatever reads
        // the job later must never see one that leaves its directory (as with v1 jobs).
        match &filename {
            None if success == Some(true) => f.bad("filename", "missing on a successful backup"),
            Some(n) if !is_safe_relative_name(n) => {
                f.bad("filename", format!("unsafe file name {n:?}"))
            }
            _ => {}
        }
        if let Some(n) = &last_all_filename {
            if !is_safe_relative_name(n) {
                f.bad("last_all_filename", format!("unsafe file name {n:?}"));
            }
        }
        if let Some(m) = &rsync_model {
            if !is_safe_relative_name(m) {
                f.bad("rsync_model", format!("unsafe module path {m:?}"));
            }
        }
        if let Some(t) = &back_type {
            if !is_safe_relative_name(t) || t.contains('/') {
                f.bad("back_type", format!("unsafe type {t:?}"));
            }
        }
        if let Some(ip) = &game_server_ip {
            if ip.trim().parse::<std::net::IpAddr>().is_err() {
                f.bad("game_server_ip", format!("not an IP address: {ip:?}"));
            }
        }
        if let Some(s) = size {
            if s < 0 {
                f.bad("size", format!("negative size {s}"));
            }
        }
        if let Some(i) = interval {
            if i <= 0 {
                f.bad("interval", format!("must be positive, got {i}"));
            }
        }
        match (
            f.problems.is_empty(),
            success,
            create_time,
            server_id,
            game_id,
            game_server_ip,
            back_type,
            instance,
            rsync_model,
        ) {
            (
                true,
                Some(success),
                Some(create_time),
                Some(server_id),
                Some(game_id),
                Some(ip),
                Some(bt),
                Some(inst),
                Some(model),
            ) => Ok(LegacyJob {
                filename,
                last_all_filename,
                last_all_time,
                size: size.map(|s| s as u64),
                log,
                create_time,
                success,
                server_id,
                game_id,
                op_id,
                game_server_ip: ip.trim().to_string(),
                back_type: bt,
                instance: inst,
                rsync_model: model,
                interval: interval.map(|i| i as u64),
            }),
            _ => Err(MessageError::Fields(f.problems)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::MAX_MESSAGE_BYTES;

    const CLIENT_OK: &str = r#"{"filename": "20161001/redis_6379.rdb", "last_all_filename": null, "last_all_time": 0, "size": 1048576, "log": "ok", "create_time": 1475280000, "success": true, "server_id": "S1001", "game_id": 12, "op_id": 0, "game_server_ip": "10.1.2.3", "back_type": "redis", "instance": 6379, "rsync_model": "backup/redis_6379", "interval": 3600}"#;

    #[test]
    fn accepts_the_ubackup_client_message() {
        let j = LegacyJob::parse(CLIENT_OK.as_bytes()).unwrap();
        assert_eq!(j.filename.as_deref(), Some("20161001/redis_6379.rdb"));
        assert_eq!((j.instance, j.game_id, j.size), (6379, 12, Some(1048576)));
        assert!(j.success);
        assert_eq!(j.interval, Some(3600));
    }

    #[test]
    fn accepts_numeric_strings_and_python_none() {
        let text = CLIENT_OK
            .replace("\"instance\": 6379", "\"instance\": \"6379\"")
            .replace(
                "\"last_all_filename\": null",
                "\"last_all_filename\": \"None\"",
            );
        let j = LegacyJob::parse(text.as_bytes()).unwrap();
        assert_eq!(j.instance, 6379);
        assert_eq!(j.last_all_filename, None);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = r#"{"success": true, "filename": "../../etc/passwd", "instance": "x", "game_server_ip": "h; rm -rf /"}"#;
        let Err(MessageError::Fields(p)) = LegacyJob::parse(text.as_bytes()) else {
            panic!("expected field errors");
        };
        let fields: Vec<&str> = p.iter().map(|p| p.field).collect();
        for want in [
            "filename",
            "instance",
            "game_server_ip",
            "create_time",
            "server_id",
            "rsync_model",
        ] {
            assert!(fields.contains(&want), "{want} not in {fields:?}");
        }
    }

    #[test]
    fn a_failed_run_with_an_empty_filename_names_no_file() {
        let text = CLIENT_OK
            .replace(
                "\"filename\": \"20161001/redis_6379.rdb\"",
                "\"filename\": \"\"",
            )
            .replace("\"success\": true", "\"success\": false");
        let j = LegacyJob::parse(text.as_bytes()).unwrap();
        assert_eq!(j.filename, None);
        let ok_but_empty = CLIENT_OK.replace(
            "\"filename\": \"20161001/redis_6379.rdb\"",
            "\"filename\": \"\"",
        );
        assert!(LegacyJob::parse(ok_but_empty.as_bytes()).is_err());
    }

    #[test]
    fn accepts_failed_run_without_filename() {
        let text = CLIENT_OK
            .replace(
                "\"filename\": \"20161001/redis_6379.rdb\"",
                "\"filename\": null",
            )
            .replace("\"success\": true", "\"success\": false")
            .replace(
                "\"log\": \"ok\"",
                "\"log\": \"execute backup script error\"",
            );
        let j = LegacyJob::parse(text.as_bytes()).unwrap();
        assert!(!j.success);
        assert_eq!(j.log, "execute backup script error");
    }

    #[test]
    fn a_failed_run_with_an_unsafe_filename_is_refused() {
        // Found when stating the job_legacy fuzz target's rules: the name was checked only
        // when success was true, so a failed run carried "../../etc/passwd" into a parsed job.
        for name in ["../../etc/passwd", "/etc/passwd", "a/./b", "a//b"] {
            let text = CLIENT_OK
                .replace("\"20161001/redis_6379.rdb\"", &format!("{name:?}"))
                .replace("\"success\": true", "\"success\": false");
            let Err(MessageError::Fields(p)) = LegacyJob::parse(text.as_bytes()) else {
                panic!("{name:?} accepted");
            };
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].field, "filename");
            assert!(crate::Job::parse(text.as_bytes()).is_err());
        }
    }

    #[test]
    fn rejects_non_objects_and_oversized_input() {
        assert!(matches!(
            LegacyJob::parse(b"[1,2]"),
            Err(MessageError::NotAnObject(_))
        ));
        assert!(matches!(
            LegacyJob::parse(b"{"),
            Err(MessageError::NotAnObject(_))
        ));
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            LegacyJob::parse(&big),
            Err(MessageError::NotAnObject(_))
        ));
    }
}
