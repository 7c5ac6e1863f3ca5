use super::*;

/// UBackup's README sample, byte for byte (the `[global]` of `000_5a029c8d46f03169.txt`,
/// inline Chinese comments included).
const README_SAMPLE: &str = include_str!("../../tests/data/readme-sample.conf");
/// `client/uuzuback.conf` of lustlost/ubackup at c17e3fa, byte for byte.
const CLIENT_CONF: &str = include_str!("../../tests/data/uuzuback.conf");

fn keys(p: &[ConfigProblem]) -> Vec<&str> {
    p.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn the_readme_sample_fails_only_on_its_my_ip() {
    let p = AgentConfig::parse(README_SAMPLE).unwrap_err();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "[global] my_ip (line 9)");
    assert!(
        p[0].problem.contains("not an IP address: \"127.0.0.0.1\""),
        "{}",
        p[0]
    );
}

#[test]
fn the_readme_sample_with_a_real_ip_reads_every_field() {
    let text = README_SAMPLE.replace("127.0.0.0.1", "10.1.2.3");
    let c = AgentConfig::parse(&text).unwrap();
    assert_eq!(c.form, ConfigForm::Ini);
    assert_eq!(c.message, MessageForm::Legacy);
    assert_eq!(
        (c.server_id.as_str(), c.game_id, c.op_id),
        ("111111", 31, 1)
    );
    assert_eq!(c.my_ip.to_string(), "10.1.2.3");
    assert_eq!(c.interval, Duration::from_secs(3600));
    assert_eq!(c.redis.0, "redis://0.0.0.0:6379/");
    assert_eq!(c.queue, "uuzuback");
    assert_eq!(
        c.log.file.as_deref(),
        Some(Path::new("/var/log/uuzu_back.log"))
    );
    assert_eq!(c.instances.len(), 2);
    let m = &c.instances[0];
    assert_eq!(m.name, "mysql3306");
    assert_eq!((m.back_type.as_str(), m.instance), ("mysql", 3306));
    assert_eq!(m.rsync_model, "backup/database_3306");
    assert_eq!(m.back_dir, Path::new("/data/backup/database_3306/"));
    assert_eq!(
        m.last_all_log.as_deref(),
        Some(Path::new("/var/log/last_3306.log"))
    );
    assert_eq!(
        m.script,
        "sh /usr/local/uuzuback/mysql_backup.sh /etc/my.cnf"
    );
    let r = &c.instances[1];
    assert_eq!(
        (r.name.as_str(), r.last_all_log.as_deref()),
        ("redis6379", None)
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn the_repository_client_conf_fails_only_on_its_my_ip() {
    let p = AgentConfig::parse(CLIENT_CONF).unwrap_err();
    assert_eq!(keys(&p), ["[global] my_ip (line 8)"]);
    let c = AgentConfig::parse(&CLIENT_CONF.replace("127.0.0.0.1", "10.0.0.1")).unwrap();
    assert_eq!(c.redis.0, "redis://0.0.0.0:6381/");
    assert_eq!(
        c.interval,
        Duration::from_secs(3600),
        "the file leaves interval out"
    );
    assert_eq!(c.instances[1].instance, 6381);
}

#[test]
fn reports_every_problem_at_once_with_section_and_key() {
    let text = "[global]\nserver_id = 1\ngame_id = x\nmy_ip = nope\nredis_host = h\nredis_port = 99999\n\
                [db]\nback_type = mysql\ninstance = abc\nrsync_model = ../etc\nback_dir = relative\n\
                back_log = /l\nscript = true\ntimeout = -1\nchain = sideways\n";
    let p = AgentConfig::parse(text).unwrap_err();
    let k = keys(&p);
    for want in [
        "[global] game_id (line 3)",
        "[global] my_ip (line 4)",
        "[global] redis_port (line 6)",
        "[db] instance (line 9)",
        "[db] rsync_model (line 10)",
        "[db] back_dir (line 11)",
        "[db] timeout (line 14)",
        "[db] chain (line 15)",
    ] {
        assert!(k.contains(&want), "{want} not in {k:?}");
    }
}

#[test]
fn names_missing_required_keys() {
    let p = AgentConfig::parse("[global]\nserver_id = 1\n[db]\nback_type = redis\n").unwrap_err();
    let k = keys(&p);
    for want in [
        "[global] game_id",
        "[global] my_ip",
        "[global] redis_host",
        "[db] instance",
        "[db] rsync_model",
        "[db] back_dir",
        "[db] back_log",
        "[db] script",
    ] {
        assert!(k.contains(&want), "{want} not in {k:?}");
    }
}

#[test]
fn unknown_ini_keys_are_warnings_and_duplicates_are_errors() {
    let base = CLIENT_CONF.replace("127.0.0.0.1", "10.0.0.1");
    let c = AgentConfig::parse(&base.replace("op_id = 1", "op_id = 1\ncolour = blue")).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].key.starts_with("[global] colour"));
    let p = AgentConfig::parse(&base.replace("op_id = 1", "op_id = 1\nop_id = 2")).unwrap_err();
    assert!(p[0].problem.contains("twice"), "{p:?}");
}

#[test]
fn ini_extensions_select_v1_and_the_checksum() {
    let text = CLIENT_CONF.replace("127.0.0.0.1", "10.0.0.1").replace(
        "op_id = 1",
        "op_id = 1\nmessage_form = v1  # ours\nchecksum = sha256\nchecksum_rate = 100M\nstate_dir = /tmp/s",
    );
    let c = AgentConfig::parse(&text).unwrap();
    assert_eq!(c.message, MessageForm::V1);
    assert_eq!(c.checksum, ChecksumChoice::Sha256);
    assert_eq!(c.checksum_rate, Some(100 << 20));
    assert_eq!(c.state_dir, Path::new("/tmp/s"));
}

#[test]
fn the_example_toml_is_valid_and_defaults_to_v1() {
    let text = include_str!("../../ubackup-agent.example.toml");
    let c = AgentConfig::parse(text).unwrap();
    assert_eq!(c.form, ConfigForm::Toml);
    assert_eq!(c.message, MessageForm::V1);
    assert_eq!(c.checksum, ChecksumChoice::Xxh128);
    assert_eq!(c.instances.len(), 2);
    let m = c.instance("mysql3306").unwrap();
    assert_eq!(m.interval, Duration::from_secs(3600));
    assert_eq!(
        c.instance("redis6379").unwrap().interval,
        Duration::from_secs(900)
    );
}

#[test]
fn toml_reports_unknown_keys_and_types() {
    let text = "[agent]\nserver_id = \"S\"\ngame_id = \"x\"\nip = \"10.0.0.1\"\nbogus = 1\n\
                [redis]\nurl = \"redis://h/\"\n[instances.a]\nback_type = \"redis\"\ninstance = 1\n\
                rsync_model = \"m\"\nback_dir = \"/d\"\nback_log = \"/l\"\nscript = \"true\"\ncolour = 1\n";
    let p = AgentConfig::parse(text).unwrap_err();
    assert_eq!(
        keys(&p),
        ["agent.bogus", "instances.a.colour", "agent.game_id"]
    );
}

#[test]
fn redis_passwords_are_redacted() {
    let u = RedisUrl("redis://:hunter2@10.0.0.1:6379/".into());
    assert!(!format!("{u} {u:?}").contains("hunter2"));
}

#[test]
fn two_sections_with_one_type_and_instance_are_refused_naming_both() {
    let section = |n: &str, t: &str, i: u32| {
        format!(
            "[instances.{n}]\nback_type = \"{t}\"\ninstance = {i}\nrsync_model = \"m\"\n\
             back_dir = \"/d/{n}\"\nback_log = \"/l/{n}\"\nscript = \"true\"\n"
        )
    };
    let head = "[agent]\nserver_id = \"S\"\ngame_id = 1\nip = \"10.0.0.1\"\n\
                [redis]\nurl = \"redis://h/\"\n";
    let text = format!(
        "{head}{}{}{}",
        section("data1", "mysql", 3306),
        section("data2", "mysql", 3306),
        section("cache", "redis", 3306)
    );
    let p = AgentConfig::parse(&text).unwrap_err();
    assert_eq!(keys(&p), ["instances.data2"]);
    assert!(
        p[0].problem
            .contains("same back_type (mysql) and instance (3306) as instances.data1"),
        "{}",
        p[0]
    );
    let ok = format!(
        "{head}{}{}",
        section("data1", "mysql", 3306),
        section("data2", "mysql", 3307)
    );
    assert!(AgentConfig::parse(&ok).is_ok());
}

#[test]
fn sentinel_keys_in_ini_and_toml() {
    let base = CLIENT_CONF.replace("127.0.0.0.1", "10.0.0.1");
    let old = AgentConfig::parse(&base).unwrap();
    assert_eq!(old.redis_ha, ubackup_redis_ha::HaSettings::default());
    let ini = base.replace(
        "op_id = 1",
        "op_id = 1\nredis_sentinel_master = ubackup\nredis_sentinels = 10.0.0.1:26379,10.0.0.2:26379",
    );
    let c = AgentConfig::parse(&ini).unwrap();
    assert_eq!(
        c.redis_ha.sentinel.as_ref().map(|s| s.sentinels.len()),
        Some(2)
    );
    assert_eq!(c.redis_ha.durability.replicas, 1);
    let toml = format!(
        "{}\n[redis_sentinel]\nmaster_name = \"ubackup\"\n",
        include_str!("../../ubackup-agent.example.toml")
    );
    let p = AgentConfig::parse(&toml).unwrap_err();
    assert!(
        p.iter().any(|p| p.problem.contains("Sentinel addresses")),
        "{p:?}"
    );
}
