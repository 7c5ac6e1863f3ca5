//! Entry points for cargo-fuzz targets (not a stable API). Invariants the targets check:
//! no panic, bounded allocation, and never a path outside back_dir.

use std::path::Path;

use crate::backlog::{self, BackLog};
use crate::config::AgentConfig;

/// Parses arbitrary bytes as a `back_log`; an accepted name must normalise to a relative
/// path inside back_dir.
pub fn back_log(data: &[u8]) {
    let data = &data[..data.len().min(backlog::MAX_LOG_BYTES as usize)];
    if let Ok(BackLog::Ok(name)) = backlog::parse_back_log(data, "fuzz") {
        check_inside(&name);
    }
}

/// Parses arbitrary bytes as a `last_all_log`.
pub fn last_all_log(data: &[u8]) {
    let data = &data[..data.len().min(backlog::MAX_LOG_BYTES as usize)];
    if let Ok(l) = backlog::parse_last_all(data, "fuzz") {
        check_inside(&l.filename);
    }
}

fn check_inside(name: &str) {
    let dir = Path::new("/backdir");
    if let Ok(n) = backlog::normalise_name(backlog::BACK_LOG, name, dir) {
        let joined = dir.join(&n);
        assert!(
            joined.starts_with(dir) && !n.split('/').any(|c| c == ".." || c.is_empty()),
            "{n:?} leaves back_dir"
        );
    }
}

/// Parses arbitrary text as a client config (INI or TOML).
pub fn client_config(data: &[u8]) {
    if data.len() > crate::config::MAX_CONFIG_BYTES as usize {
        return;
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = AgentConfig::parse(text) {
            for i in &c.instances {
                assert!(i.back_dir.is_absolute());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn entry_points_take_garbage() {
        for d in [
            &b"ok\n../../x"[..],
            b"ok\n/abs",
            b"wrong",
            b"\xff\xfe",
            b"[global]\n[x]\nback_dir=rel",
        ] {
            super::back_log(d);
            super::last_all_log(d);
            super::client_config(d);
        }
    }
}
