//! Entry points for the cargo-fuzz targets in `fuzz/` (`server_ini`, `node_config`), also run
//! by the stable proptests in `tests/config_bounded.rs`.
//!
//! Each takes arbitrary bytes as a configuration file and asserts what may not happen besides
//! a panic: a configuration accepted that breaks a rule the builder states (a template that
//! does not balance or leaves the backup root, a list that is empty, named twice or is also the
//! dead-letter or result list, a lease shorter than two heartbeats).
//!
//! Memory is bounded by the input: `NodeConfig::load` refuses files over 1 MiB, and the
//! parsers hold at most a copy of each value.

use std::path::{Component, Path};

use crate::config::{check_template, NodeConfig};

/// A plain job (every template value one ordinary path component).
const PLAIN_JOB: &[u8] = br#"{"filename": "a.rdb", "size": 3, "log": "ok", "create_time": 1, "success": true, "server_id": "S1", "game_id": 12, "game_server_ip": "10.1.2.3", "back_type": "redis", "instance": 6379, "rsync_model": "backup/r"}"#;

fn check(cfg: &NodeConfig) {
    assert!(
        !cfg.root.as_os_str().is_empty(),
        "accepted without a backup root"
    );
    assert!((1..=256).contains(&cfg.workers));
    let t = &cfg.pull.destination;
    assert_eq!(check_template(t), Ok(()));
    assert_eq!(
        t.matches('{').count(),
        t.matches('}').count(),
        "unbalanced template {t:?}"
    );
    assert!(
        !t.split('/').any(|c| c == ".."),
        "template {t:?} climbs out of where it starts"
    );
    if let (Ok(job), Some(rest)) = (
        ubackup_messages::Job::parse(PLAIN_JOB),
        t.strip_prefix("{root}"),
    ) {
        let dest = crate::node::destination(cfg, &job).expect("plain values render");
        let root = cfg.root.to_string_lossy();
        let below = dest
            .to_string_lossy()
            .strip_prefix(root.trim_end_matches('/'))
            .map(str::to_string);
        assert!(
            below.is_some_and(|b| !Path::new(&b)
                .components()
                .any(|c| c == Component::ParentDir)),
            "{t:?} (after the root: {rest:?}) renders to {dest:?}, outside {root:?}"
        );
    }
    let q = &cfg.queue;
    assert!(!q.lists.is_empty(), "no job lists");
    let mut seen = std::collections::BTreeSet::new();
    for l in &q.lists {
        assert!(seen.insert(l), "{l:?} listed twice");
        assert!(
            !l.is_empty() && l.bytes().all(|b| b.is_ascii_graphic()),
            "{l:?}"
        );
    }
    assert!(
        !q.lists.contains(&q.dead_letter),
        "dead letters on a job list"
    );
    assert!(
        !q.lists.contains(&cfg.results.list),
        "results on a job list"
    );
    assert!(
        q.lease >= q.heartbeat * 2,
        "{:?} < 2 x {:?}",
        q.lease,
        q.heartbeat
    );
    assert!(
        !cfg.node_id.is_empty() && !cfg.node_id.contains(':'),
        "{:?}",
        cfg.node_id
    );
    for url in [&q.redis.0, &cfg.results.redis.0] {
        assert!(
            url.starts_with("redis://") || url.starts_with("unix://"),
            "{url:?}"
        );
        assert!(!url.contains(char::is_whitespace), "{url:?}");
    }
    // Debug never shows a Redis password.
    let debug = format!("{:?}", cfg.queue.redis);
    if let (Some(s), Some(at)) = (q.redis.0.find("://"), q.redis.0.rfind('@')) {
        if at > s + 3 {
            assert!(debug.contains("***@"), "{debug}");
        }
    }
}

/// UBackup's server `uuzuback.conf`: `[global]` and then `data`.
///
/// May not: panic; accept a configuration that [`check`] refuses.
pub fn server_ini(data: &[u8]) {
    let mut text = String::from("[global]\n");
    text.push_str(&String::from_utf8_lossy(data));
    if let Ok(cfg) = NodeConfig::parse(&text) {
        check(&cfg);
    }
}

/// A configuration file of either form (`[global]` first: UBackup's INI; else ubackup's
/// TOML), as `NodeConfig::load` reads it.
///
/// May not: panic; accept a configuration that [`check`] refuses.
pub fn node_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = NodeConfig::parse(text) {
        check(&cfg);
    }
}
