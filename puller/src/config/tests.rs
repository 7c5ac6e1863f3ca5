use super::*;
use ubackup_legacy_ini::strip_inline_comment;

const SAMPLE: &str = include_str!("../../tests/data/uuzuback-server.conf");
const EXAMPLE: &str = include_str!("../../ubackup-puller.example.toml");

#[test]
fn loads_ubackups_sample_server_config_unchanged() {
    let c = NodeConfig::parse(SAMPLE).unwrap();
    assert_eq!(c.form, ConfigForm::Legacy);
    assert_eq!(c.workers, 4);
    assert_eq!(c.bwlimit, Some(Rate::bytes_per_sec(62000 * 1024)));
    assert_eq!(c.root, PathBuf::from("/backup/uuzubackup/"));
    assert_eq!(c.reserve_bytes, 1000 << 30);
    assert_eq!(c.interval, Duration::ZERO);
    assert_eq!(c.queue.redis.0, "redis://127.0.0.1:6379/");
    assert_eq!(c.queue.lists, ["level1", "uuzuback_f"]);
    assert_eq!(c.log.file, Some(PathBuf::from("/var/log/uuzuback.log")));
    assert_eq!(
        c.log.error_file,
        Some(PathBuf::from("/var/log/uuzuback.error"))
    );
    assert_eq!(c.node_ip, "127.0.0.1");
    assert_eq!(c.pull.retry, 3);
    assert_eq!(c.results.redis.0, "redis://127.0.0.1:6379/");
    assert_eq!(c.results.list, "message");
    assert_eq!(c.node_id, "5");
    assert_eq!(c.pull.destination, DEFAULT_DESTINATION);
}

#[test]
fn loads_the_annotated_example() {
    let c = NodeConfig::parse(EXAMPLE).unwrap();
    assert_eq!(c.form, ConfigForm::Toml);
    assert_eq!(c.node_id, "backup-node-5");
    assert_eq!(c.queue.lists, ["level1", "uuzuback_f"]);
    assert_eq!(c.queue.lease, Duration::from_secs(30));
    assert_eq!(c.metrics, Some("127.0.0.1:9187".parse().unwrap()));
    assert!(c.pull.previous_as_basis);
}

#[test]
fn reports_every_problem_with_its_key() {
    let text = r#"
[node]
workers = 0
bwlimit = "fast"
[queue]
lists = ["a", "a b", "a"]
lease_secs = 3
heartbeat_secs = 5
[pull]
destination = "{root}/{nope}"
protocol = 27
basis = "yesterday"
[metrics]
listen = "nowhere"
[extra]
thing = 1
"#;
    let problems = NodeConfig::parse(text).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for want in [
        "node.root",
        "node.workers",
        "node.bwlimit",
        "queue.lists",
        "queue.lease_secs",
        "pull.destination",
        "pull.protocol",
        "pull.basis",
        "metrics.listen",
        "extra.thing",
    ] {
        assert!(keys.contains(&want), "{want} missing from {problems:?}");
    }
    // Both list problems are named.
    assert_eq!(keys.iter().filter(|k| **k == "queue.lists").count(), 2);
}

#[test]
fn legacy_problems_use_legacy_key_names() {
    let text = SAMPLE
        .replace("work_thread = 4", "work_thread = four")
        .replace("redis_port = 6379", "redis_port = 63790000")
        .replace("reserve = 1000", "reserve = -1");
    let problems = NodeConfig::parse(&text).unwrap_err();
    let mut keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["redis_port", "reserve", "work_thread"],
        "{problems:?}"
    );
}

#[test]
fn legacy_unknown_keys_are_errors_and_other_sections_are_ignored() {
    let text = format!("{SAMPLE}\nwork_threads = 5\n[mysql3306]\nback_type = mysql\n");
    let problems = NodeConfig::parse(&text).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "work_threads");
}

#[test]
fn redis_passwords_are_redacted() {
    let u = RedisUrl("redis://:hunter2@10.0.0.1:6379/0".into());
    assert_eq!(format!("{u}"), "redis://***@10.0.0.1:6379/0");
    assert!(!format!("{u:?}").contains("hunter2"));
}

#[test]
fn templates_are_checked() {
    assert!(check_template(DEFAULT_DESTINATION).is_ok());
    assert!(check_template("/data/{server_id}/{instance}").is_ok());
    assert!(check_template("{root}/{x}").is_err());
    assert!(check_template("{root}/{back_type").is_err());
    assert!(check_template("relative/{root}").is_err());
}

#[test]
fn templates_with_a_stray_brace_or_a_parent_component_are_refused() {
    // Found when stating the node_config fuzz target's rules: a '}' before a later
    // placeholder was not seen (only the text after the last placeholder was checked), and
    // `{root}/..` rendered outside the backup root.
    for t in [
        "{root}/}/{ip_d}",
        "{root}/a}b/{back_type}/{ip_d}",
        "{root}/../{ip_d}",
        "{root}/{back_type}/..",
        "/data/../etc/{ip_d}",
    ] {
        assert!(check_template(t).is_err(), "{t:?} accepted");
        let text = format!("[node]\nroot = \"/b\"\n[pull]\ndestination = \"{t}\"\n");
        assert!(
            NodeConfig::parse(&text).is_err(),
            "{t:?} accepted in a file"
        );
    }
    // Dots inside a component are a name, not a way out.
    assert!(check_template("{root}/..a/b../{ip_d}").is_ok());
}

#[test]
fn inline_comments_need_whitespace_before_them() {
    assert_eq!(strip_inline_comment("a = b #c"), "a = b ");
    assert_eq!(strip_inline_comment("a = b#c"), "a = b#c");
    assert_eq!(strip_inline_comment("a = b ;c"), "a = b ");
}

#[test]
fn huge_numbers_are_refused_or_saturated_never_overflowed() {
    let c = NodeConfig::parse("[node]\nroot = \"/b\"\nbwlimit = 9223372036854775807\n").unwrap();
    assert_eq!(c.bwlimit, Some(Rate::bytes_per_sec(u64::MAX)));
    let p = NodeConfig::parse("[node]\nroot = \"/b\"\nreserve_gib = 9223372036854775807\n")
        .unwrap_err();
    assert_eq!(p[0].key, "node.reserve_gib");
}

#[test]
fn retention_policies_per_type_and_business_and_ubackups_keeptime() {
    use crate::retention::Policy;
    let p = |keep_days, min_fulls, from: &str| Policy {
        keep_days,
        min_fulls,
        from: from.into(),
    };
    // UBackup never applied its reserved keys: on a legacy INI they are read and checked,
    // but nothing is deleted until the operator says so.
    let c = NodeConfig::parse(SAMPLE).unwrap();
    assert!(!c.retention.expires_anything());
    assert_eq!(c.retention.policy("mysql", Some(1)).keep_days, 0);
    let said = c.retention.describe().join("\n");
    assert!(said.starts_with("retention: off, nothing is ever deleted (mysqlkeeptime = 15, rediskeeptime = 15 not applied"), "{said}");
    assert!(said.contains("apply_keeptime = yes"), "{said}");
    let off =
        NodeConfig::parse(&SAMPLE.replace("node_id=5", "node_id=5\napply_keeptime = no")).unwrap();
    assert!(!off.retention.expires_anything());
    // Turned on, they are honoured.
    let c =
        NodeConfig::parse(&SAMPLE.replace("node_id=5", "node_id=5\napply_keeptime = yes")).unwrap();
    assert!(c.retention.not_applied.is_none());
    let said = c.retention.describe().join("\n");
    assert!(
        said.contains("retention: on; backups are deleted by `run` every 3600 s"),
        "{said}"
    );
    assert!(said.contains("type mysql: deleted once taken more than 15 days ago (mysqlkeeptime), keeping the 1 newest fulls per instance, and everything from the newest full taken before that on"), "{said}");
    assert!(said.contains("type redis: deleted once taken more than 15 days ago (rediskeeptime), keeping the 1 newest fulls per instance\n"), "{said}");
    assert!(said.contains("every other type: kept for ever"), "{said}");
    assert_eq!(
        c.retention.policy("mysql", Some(1)),
        &p(15, 1, "mysqlkeeptime")
    );
    assert_eq!(
        c.retention.policy("redis", None),
        &p(15, 1, "rediskeeptime")
    );
    assert_eq!(c.retention.policy("ssdb", None).keep_days, 0);
    assert_eq!(c.retention.interval, Duration::from_secs(3600));

    let text = r#"
[node]
root = "/b"
[retention]
keep_days = 30
min_fulls = 2
interval_secs = 600
[retention.mysql]
keep_days = 7
[retention.mysql.game.31]
keep_days = 60
[retention.redis.game.5]
min_fulls = 4
[scrub]
rate = "10M"
interval_secs = 0
"#;
    let c = NodeConfig::parse(text).unwrap();
    let r = &c.retention;
    assert_eq!(r.interval, Duration::from_secs(600));
    assert_eq!(r.policy("ssdb", Some(1)), &p(30, 2, "retention"));
    assert_eq!(r.policy("mysql", Some(1)), &p(7, 2, "retention.mysql"));
    assert_eq!(
        r.policy("mysql", Some(31)),
        &p(60, 2, "retention.mysql.game.31")
    );
    assert_eq!(r.policy("redis", Some(5)), &p(30, 4, "retention"));
    assert_eq!(c.scrub.rate, Some(Rate::bytes_per_sec(10 << 20)));
    assert_eq!(c.scrub.interval, Duration::ZERO);

    let c = NodeConfig::parse("[node]\nroot = \"/b\"\n").unwrap();
    assert_eq!(c.scrub.rate, Some(Rate::bytes_per_sec(50 << 20)));
    assert_eq!(c.scrub.interval, Duration::from_secs(86400));
    assert!(
        !c.retention.expires_anything(),
        "nothing expires unless a policy says so"
    );
}

#[test]
fn retention_problems_name_their_keys() {
    let text = SAMPLE
        .replace("mysqlkeeptime = 15", "mysqlkeeptime = forever")
        .replace("rediskeeptime = 15", "rediskeeptime = -3");
    let problems = NodeConfig::parse(&text).unwrap_err();
    let mut keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["mysqlkeeptime", "rediskeeptime"], "{problems:?}");
    let problems =
        NodeConfig::parse(&SAMPLE.replace("node_id=5", "node_id=5\napply_keeptime = maybe"))
            .unwrap_err();
    assert_eq!(problems[0].key, "apply_keeptime", "{problems:?}");
    // Only the INI has it: in TOML a [retention] policy is on by itself.
    let problems = NodeConfig::parse("[node]\nroot = \"/b\"\n[retention]\napply_keeptime = true\n")
        .unwrap_err();
    assert_eq!(problems[0].key, "retention.apply_keeptime", "{problems:?}");

    let text = r#"
[node]
root = "/b"
[retention]
interval_secs = -1
[retention.mysql]
keep_days = "7"
min_fulls = 0
keep = 3
[retention.mysql.game.x]
keep_days = 1
[scrub]
rate = "fast"
"#;
    let problems = NodeConfig::parse(text).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for want in [
        "retention.interval_secs",
        "retention.mysql.keep_days",
        "retention.mysql.min_fulls",
        "retention.mysql.keep",
        "retention.mysql.game.x.keep_days",
        "scrub.rate",
    ] {
        assert!(keys.contains(&want), "{want} missing from {problems:?}");
    }
}

#[test]
fn a_legacy_ini_sets_the_stall_timeout() {
    let c = NodeConfig::parse(SAMPLE).unwrap();
    assert_eq!(c.pull.stall_timeout, Duration::from_secs(300));
    let c = NodeConfig::parse(&SAMPLE.replace("retry = 3", "retry = 3\nstall_timeout = 45 #秒"))
        .unwrap();
    assert_eq!(c.pull.stall_timeout, Duration::from_secs(45));
    for bad in ["0", "soon", "-1"] {
        let p = NodeConfig::parse(
            &SAMPLE.replace("retry = 3", &format!("retry = 3\nstall_timeout = {bad}")),
        )
        .unwrap_err();
        assert_eq!(p[0].key, "stall_timeout", "{bad}: {p:?}");
    }
}

#[test]
fn legacy_sentinel_keys_select_sentinel_mode_and_old_files_stay_direct() {
    let old = NodeConfig::parse(SAMPLE).unwrap();
    assert_eq!(old.queue.ha, RedisHa::default());
    let text = format!(
        "{SAMPLE}\nredis_sentinel_master = ubackup\nredis_sentinels = 10.0.0.1:26379, 10.0.0.2:26379\n\
         redis_password = pw\nredis_wait_timeout_ms = 500\n"
    );
    let c = NodeConfig::parse(&text).unwrap();
    let s = c.queue.ha.sentinel.as_ref().unwrap();
    assert_eq!(s.master_name, "ubackup");
    assert_eq!(s.sentinels.len(), 2);
    assert_eq!(c.queue.ha.durability.replicas, 1);
    assert_eq!(c.queue.ha.durability.timeout, Duration::from_millis(500));
    assert!(!format!("{c:?}").contains("\"pw\""));
}

#[test]
fn toml_sentinel_problems_name_their_keys() {
    let text = format!(
        "{EXAMPLE}\n[redis_sentinel]\nsentinels = [\"h:1\", \"nope\"]\nwait_timeout_ms = 60000\n"
    );
    let problems = NodeConfig::parse(&text).unwrap_err();
    let mut keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "redis_sentinel.master_name",
            "redis_sentinel.sentinels",
            "redis_sentinel.wait_timeout_ms"
        ],
        "{problems:?}"
    );
}
