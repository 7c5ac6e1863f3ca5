//! The job message of one instance's run, in either form.
//!
//! - Legacy: field for field what `uuzuback_client.py` sends (compat §A.2): the same
//!   fifteen names, `server_id`/`game_id`/`op_id`/`instance` as integers (the client cast
//!   them with `int()`), `filename`/`last_all_filename` null when unknown, `size` 0 and
//!   `last_all_time` 0 (epoch seconds) when none, `create_time` the run start in seconds.
//! - v1: [`ubackup_messages::Job::to_v1_json`], with a job id that is stable for the run
//!   (a re-sent job is the same job), the daemon port, the host checksum and the chain,
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

/// A stable job id: server, type, instance and run start (characters the node accepts).
pub fn job_id(cfg: &AgentConfig, inst: &InstanceConfig, create_time_ms: i64) -> String {
    let raw = format!(
        "{}-{}-{}-{}",
        cfg.server_id, inst.back_type, inst.instance, create_time_ms
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
    id.chars().take(128).collect()
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
