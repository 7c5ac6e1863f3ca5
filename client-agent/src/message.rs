//! The job message of one instance's run, in either form.
//!
//! - Legacy: field for field what `uuzuback_client.py` sends (compat §A.2): the same
//!   fifteen names, `server_id`/`game_id`/`op_id`/`instance` as integers (the client cast
//!   them with `int()`), `filename`/`last_all_filename` null when unknown, `size` 0 and
//!   `last_all_time` 0 (epoch seconds) when none, `create_time` the run start in seconds.
//! - v1: [`ubackup_messages::Job::to_v1_json`], with a job id that is stable for the run
//!   (a re-sent job is the same job; the section is part of it, so two sections never share
//!   one), the daemon port, the host checksum and the chain,
//!   including the previous incremental (`prev_filename`, `prev_time_ms`).

use serde_json::{json, Value};
use ubackup_messages::{ChecksumHint, Job, JobForm};

use crate::config::{AgentConfig, InstanceConfig};

/// What one run found, whatever the message form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Start of the agent's run (shared by every instance of a `once` pass), epoch ms.
    pub create_time_ms: i64,
    /// Backup file, relative to back_dir (None on early failures).
    pub filename: Option<String>,
    /// Size measured on the host (0 when unknown).
    pub size: u64,
    /// Host checksum (v1 only).
    pub checksum: Option<ChecksumHint>,
    /// The full this incremental depends on: name and epoch seconds as `last_all_log`'s
    /// line 3 says (UBackup's units).
    pub last_all: Option<(String, i64)>,
    /// The previous incremental this one was taken against (v1 only): name, epoch ms.
    pub prev: Option<(String, i64)>,
    /// Success.
    pub success: bool,
    /// `ok` or the failure text.
    pub log: String,
}

/// Longest job id the nodes accept.
const MAX_JOB_ID: usize = 128;

/// A stable job id: server, type, instance, section and run start, so two sections never
/// share an id in one pass. Characters the node does not accept become `_`; when that
/// changed anything, or the id would be longer than 128, a hash of the whole raw id replaces
/// the tail, so distinct raw ids stay distinct.
pub fn job_id(cfg: &AgentConfig, inst: &InstanceConfig, create_time_ms: i64) -> String {
    let raw = format!(
        "{}-{}-{}-{}-{}",
        cfg.server_id, inst.back_type, inst.instance, inst.name, create_time_ms
    );
    let id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id == raw && id.len() <= MAX_JOB_ID {
        return id;
    }
    let hash = format!("-{:016x}", xxhash_rust::xxh3::xxh3_64(raw.as_bytes()));
    // `id` is ASCII: a char count is a byte count.
    let keep: String = id.chars().take(MAX_JOB_ID - hash.len()).collect();
    keep + &hash
}

/// The legacy message (see the module docs).
pub fn legacy_json(cfg: &AgentConfig, inst: &InstanceConfig, r: &RunReport) -> String {
    // uuzuback_client.py sent int(server_id); a non-numeric id (which made it exit) is sent
    // as a string, which the nodes accept.
    let server_id = match cfg.server_id.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(cfg.server_id.clone()),
    };
    let (laf, lat) = match &r.last_all {
        Some((n, t)) => (Value::from(n.clone()), *t),
        None => (Value::Null, 0),
    };
    json!({
        "filename": r.filename,
        "last_all_filename": laf,
        "last_all_time": lat,
        "size": r.size,
        "log": r.log,
        "create_time": r.create_time_ms.div_euclid(1000),
        "success": r.success,
        "server_id": server_id,
        "game_id": cfg.game_id,
        "op_id": cfg.op_id,
        "game_server_ip": cfg.my_ip.to_string(),
        "back_type": inst.back_type,
        "instance": inst.instance,
        "rsync_model": inst.rsync_model,
        "interval": inst.interval.as_secs(),
    })
    .to_string()
}

/// The v1 job.
pub fn v1_job(cfg: &AgentConfig, inst: &InstanceConfig, r: &RunReport) -> Job {
    Job {
        form: JobForm::V1,
        job_id: Some(job_id(cfg, inst, r.create_time_ms)),
        server_id: cfg.server_id.clone(),
        game_id: cfg.game_id,
        op_id: cfg.op_id,
        host: cfg.my_ip,
        port: Some(cfg.rsync_port),
        user: None,
        module_path: inst.rsync_model.clone(),
        filename: r.filename.clone(),
        size: Some(r.size),
        checksum: r.checksum.clone(),
        back_type: inst.back_type.clone(),
        instance: inst.instance,
        interval: Some(inst.interval.as_secs()),
        create_time_ms: r.create_time_ms,
        last_all_filename: r.last_all.as_ref().map(|(n, _)| n.clone()),
        last_all_time_ms: r
            .last_all
            .as_ref()
            .map_or(0, |(_, t)| t.saturating_mul(1000)),
        prev_filename: r.prev.as_ref().map(|(n, _)| n.clone()),
        prev_time_ms: r.prev.as_ref().map_or(0, |(_, t)| *t),
        success: r.success,
        log: r.log.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(sections: &[(&str, i64)]) -> AgentConfig {
        let mut t = "[agent]\nserver_id = \"S1\"\ngame_id = 1\nip = \"10.0.0.1\"\n\
                     [redis]\nurl = \"redis://h/\"\n"
            .to_string();
        for (n, i) in sections {
            t += &format!(
                "[instances.\"{n}\"]\nback_type = \"mysql\"\ninstance = {i}\nrsync_model = \"m\"\n\
                 back_dir = \"/d/{i}\"\nback_log = \"/l/{i}\"\nscript = \"true\"\n"
            );
        }
        AgentConfig::parse(&t).unwrap()
    }

    #[test]
    fn job_ids_differ_when_sections_differ_and_repeat_for_the_same_run() {
        let c = cfg(&[("a#", 1), ("a@", 2), ("a_", 3), ("b", 4)]);
        let mut ids: Vec<String> = Vec::new();
        for i in &c.instances {
            // Same type, instance and run start; only the section differs.
            let same = InstanceConfig {
                instance: 3306,
                ..i.clone()
            };
            let id = job_id(&c, &same, 1_700_000_000_000);
            assert_eq!(id, job_id(&c, &same, 1_700_000_000_000), "stable");
            assert!(id.len() <= MAX_JOB_ID);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)));
            ids.push(id);
        }
        assert_eq!(ids[3], "S1-mysql-3306-b-1700000000000");
        let mut uniq = ids.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), ids.len(), "{ids:?}");
        let long = InstanceConfig {
            name: "x".repeat(200),
            ..c.instances[3].clone()
        };
        let longer = InstanceConfig {
            name: format!("{}y", "x".repeat(200)),
            ..c.instances[3].clone()
        };
        let (a, b) = (job_id(&c, &long, 1), job_id(&c, &longer, 1));
        assert!(a.len() <= MAX_JOB_ID && b.len() <= MAX_JOB_ID);
        assert_ne!(a, b);
    }
}
