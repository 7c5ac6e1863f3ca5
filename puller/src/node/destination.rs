//! Where a job's file lands: the configured template filled with values from the message,
//! each of which must be one plain path component.

use std::path::PathBuf;

use ubackup_messages::Job;

use crate::config::NodeConfig;

/// A value that may become one directory level.
fn is_component(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && !s.starts_with('.') && !s.contains(['/', '\0', '\n', '\r'])
}

/// The job's destination directory from the template. Values from the message must each be
/// one plain path component.
pub fn destination(cfg: &NodeConfig, job: &Job) -> Result<PathBuf, String> {
    let ip = job.host.to_string();
    let (abc, d) = match job.host {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            (format!("{}.{}.{}", o[0], o[1], o[2]), o[3].to_string())
        }
        // UBackup only knew IPv4; an IPv6 host keeps its whole address in one level.
        std::net::IpAddr::V6(_) => (ip.replace(':', "_"), "v6".to_string()),
    };
    let values = [
        ("back_type", job.back_type.clone()),
        ("ip", ip.replace(':', "_")),
        ("ip_abc", abc),
        ("ip_d", d),
        ("server_id", job.server_id.clone()),
        ("instance", job.instance.to_string()),
        ("game_id", job.game_id.to_string()),
    ];
    let mut out = cfg.pull.destination.clone();
    for (name, v) in &values {
        let ph = format!("{{{name}}}");
        if out.contains(&ph) {
            if !is_component(v) {
                return Err(format!("{name}: {v:?} cannot be a directory name"));
            }
            out = out.replace(&ph, v);
        }
    }
    let root = cfg.root.to_string_lossy();
    let out = out.replace("{root}", root.trim_end_matches('/'));
    Ok(PathBuf::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(template: &str) -> NodeConfig {
        let mut c = NodeConfig::parse("[node]\nroot = \"/b\"\n").unwrap();
        c.pull.destination = template.into();
        c
    }

    fn job(json: &str) -> Job {
        Job::parse(json.as_bytes()).unwrap()
    }

    const J: &str = r#"{"filename": "a.rdb", "size": 3, "log": "ok", "create_time": 1, "success": true, "server_id": "S1", "game_id": 12, "game_server_ip": "10.1.2.3", "back_type": "redis", "instance": 6379, "rsync_model": "backup/r"}"#;

    #[test]
    fn default_destination_is_ubackups_layout() {
        let d = destination(&cfg(crate::config::DEFAULT_DESTINATION), &job(J)).unwrap();
        assert_eq!(d, PathBuf::from("/b/redis/10.1.2/3"));
    }

    #[test]
    fn message_values_must_be_plain_components() {
        let j = job(&J.replace("\"S1\"", "\"../S1\""));
        assert!(destination(&cfg("{root}/{server_id}"), &j).is_err());
        let j = job(&J.replace("\"S1\"", "\".hidden\""));
        assert!(destination(&cfg("{root}/{server_id}"), &j).is_err());
        // Not used by the template: not checked.
        assert!(destination(&cfg("{root}/{back_type}"), &j).is_ok());
    }
}
