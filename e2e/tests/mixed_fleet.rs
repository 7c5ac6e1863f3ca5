//! The mixed states of a migration from UBackup, as they really occur (docs/migration.md):
//! an old `uuzuback_client.py` message, and a new agent that still sends the legacy message
//! from an unchanged UBackup INI, both through a new node into the new indexer.

use std::time::Duration;

use redis::Commands as _;
use serde_json::{json, Value};
use ubackup_e2e::fleet::{start_indexer, start_node, wait_for, FleetOptions};
use ubackup_e2e::scenario::{field, succeeded};
use ubackup_testkit::bins::workspace_binary;
use ubackup_testkit::daemon::{DaemonBuilder, Module};
use ubackup_testkit::redis::RedisServer;
use ubackup_testkit::rsync::{require_rsync, RsyncVersion};

fn history(api: &ubackup_testkit::http::Client, path: &str) -> Vec<Value> {
    api.get_json(&format!("/api/v1/instances/{path}/backups?per_page=100"))
        .ok()
        .and_then(|v| v["backups"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn old_client_messages_and_new_agents_legacy_messages_reach_the_new_catalog() {
    if require_rsync(RsyncVersion::V3_5_0).is_none() {
        return;
    }
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().canonicalize().expect("canonical");
    let agent_bin = workspace_binary("ubackup-agent").expect("agent");
    workspace_binary("ubackup-puller").expect("puller");
    workspace_binary("ubackup-indexer").expect("indexer");
    let opts = FleetOptions {
        dir: dir.clone(),
        bin_dir: agent_bin.parent().expect("bin dir").to_path_buf(),
        interval_secs: 3600,
        grace_secs: 3000,
        http_port: 0,
        admin_password: "mixed-admin".into(),
        // Migration step 1 (docs/migration.md): nodes publish on `ubackup_results`; the
        // indexer consumes it and forwards a copy of each result to `message` for to_es.py.
        results_list: "ubackup_results".into(),
        forward_list: Some("message".into()),
    };

    // The database host: UBackup's rsyncd module `backup` with two instances' backups.
    let exported = dir.join("host/backup");
    let old_dir = exported.join("redis_6379");
    let new_dir = exported.join("database_3306");
    std::fs::create_dir_all(&old_dir).expect("mkdir");
    std::fs::create_dir_all(&new_dir).expect("mkdir");
    let old_bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(old_dir.join("dump.rdb"), &old_bytes).expect("write");
    let rsyncd = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("backup", &exported))
        .start()
        .expect("rsync daemon");

    // UBackup-format jobs name no port: the node's pull.rsync_port is the host's daemon.
    let mut node = start_node(&opts, &redis, 1, "unused", Some(rsyncd.port()), None).expect("node");
    let (mut indexer, _cfg, http, token) = start_indexer(&opts, &redis, &[]).expect("indexer");
    let api = ubackup_testkit::http::Client::new(http).bearer(token);

    // 1. What uuzuback_client.py LPUSHes (ubackup-compat.md §A.2), byte for byte its fields.
    let create_time = 1_700_000_000i64;
    let old = json!({
        "filename": "dump.rdb", "last_all_filename": null, "last_all_time": 0,
        "size": old_bytes.len(), "log": "ok", "create_time": create_time, "success": true,
        "server_id": "111111", "game_id": 31, "op_id": 1, "game_server_ip": "127.0.0.1",
        "back_type": "redis", "instance": 6379, "rsync_model": "backup/redis_6379",
        "interval": 3600
    });
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_connection()
        .expect("connection");
    let _: i64 = conn.lpush("uuzuback", old.to_string()).expect("lpush");

    // 2. A new agent on an unchanged UBackup INI: the legacy message by default.
    let script = dir.join("host/mysql_backup.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nhead -c 123457 /dev/urandom > {d}/full-1.xb\nprintf 'ok\\nfull-1.xb\\n' > {d}/../mysql_3306.log\nprintf 'ok\\nfull-1.xb\\n' > {d}/../last_3306.log\n",
            d = new_dir.display()
        ),
    )
    .expect("script");
    let ini = dir.join("host/uuzuback.conf");
    std::fs::write(
        &ini,
        format!(
            "[global]\nserver_id = 222222  #服务器ID\ngame_id = 32 #业务ID\nop_id = 1\ninterval = 3600\n\
             redis_host = 127.0.0.1\nredis_port = {rp}\nredis_queue = uuzuback\nmy_ip = 127.0.0.1 #本机IP\n\
             state_dir = {state}\nrsync_port = {port}\n\n\
             [mysql3306]   #一个section配置一个需要备份的实例\nback_type = mysql\ninstance = 3306\n\
             rsync_model = backup/database_3306\nback_dir = {bd}/\nback_log = {host}/backup/mysql_3306.log\n\
             last_all_log = {host}/backup/last_3306.log\nscript = sh {script}\n",
            rp = redis.port(),
            state = dir.join("host/state").display(),
            port = rsyncd.port(),
            bd = new_dir.display(),
            host = dir.join("host").display(),
            script = script.display(),
        ),
    )
    .expect("ini");
    let out = std::process::Command::new(&agent_bin)
        .args(["once", "-c"])
        .arg(&ini)
        .output()
        .expect("agent once");
    assert!(
        out.status.success(),
        "agent once: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rows = wait_for(
        "both backups in the catalog",
        Duration::from_secs(60),
        || {
            let old_rows = history(&api, "111111/redis/6379");
            let new_rows = history(&api, "222222/mysql/3306");
            Ok((!old_rows.is_empty() && !new_rows.is_empty()).then_some((old_rows, new_rows)))
        },
    );
    let (old_rows, new_rows) = match rows {
        Ok(r) => r,
        Err(e) => panic!(
            "{e:#}\n--- node:\n{}\n--- indexer:\n{}",
            node.puller.tail(),
            indexer.tail()
        ),
    };
    assert_eq!(old_rows.len(), 1, "{old_rows:?}");
    assert_eq!(new_rows.len(), 1, "{new_rows:?}");
    let o = &old_rows[0];
    assert!(succeeded(o), "{o}");
    assert_eq!(
        field(o, "filename").and_then(Value::as_str),
        Some("dump.rdb")
    );
    assert_eq!(
        field(o, "size").and_then(Value::as_u64),
        Some(old_bytes.len() as u64)
    );
    assert_eq!(
        field(o, "create_time").and_then(Value::as_i64),
        Some(create_time * 1000),
        "UBackup's seconds become ms in results and the catalog: {o}"
    );
    assert_eq!(field(o, "game_id").and_then(Value::as_i64), Some(31));
    let n = &new_rows[0];
    assert!(succeeded(n), "{n}");
    assert_eq!(
        field(n, "filename").and_then(Value::as_str),
        Some("full-1.xb")
    );
    assert_eq!(field(n, "size").and_then(Value::as_u64), Some(123_457));
    assert_eq!(field(n, "game_id").and_then(Value::as_i64), Some(32));

    // The old route answers in UBackup's shape for both (what the Chrome extension and old
    // scripts read).
    let legacy = api
        .get_json("/api/get_backup_list?server_id=111111&type=redis&instance=6379")
        .expect("legacy route");
    let list = legacy.as_array().expect("a JSON list");
    assert_eq!(list.len(), 1, "{legacy}");
    assert_eq!(list[0]["filename"], "dump.rdb");
    assert_eq!(list[0]["succeed"], 1);

    // to_es.py's `message` list got a byte-for-byte copy of each result, exactly once, and
    // nothing is left on the indexer's own lists.
    let forwarded: Vec<String> = conn.lrange("message", 0, -1).expect("lrange");
    assert_eq!(forwarded.len(), 2, "{forwarded:?}");
    let ids: Vec<String> = forwarded
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_str(m).expect("forwarded JSON");
            v["filename"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert!(ids.contains(&"dump.rdb".to_owned()), "{ids:?}");
    assert!(ids.contains(&"full-1.xb".to_owned()), "{ids:?}");
    let left: i64 = conn.llen("ubackup_results").expect("llen");
    assert_eq!(left, 0);

    // The pulled file is the host's, byte for byte.
    let landed = walk(&node.root)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "dump.rdb"))
        .expect("dump.rdb on the node");
    assert_eq!(std::fs::read(landed).expect("read"), old_bytes);

    assert!(node
        .puller
        .stop(Duration::from_secs(30))
        .expect("node stops")
        .success());
    assert!(indexer
        .stop(Duration::from_secs(30))
        .expect("indexer stops")
        .success());
    redis.stop();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
