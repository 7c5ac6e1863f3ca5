//! The agent's configuration: UBackup's client `uuzuback.conf` (INI) unchanged, or our TOML
//! (see `ubackup-agent.example.toml`).
//!
//! Both are flattened into values keyed by where they live, each with the name to show in a
//! problem (`[global] my_ip (line 8)` for INI, `agent.ip` for TOML); one builder then
//! validates them and reports *every* problem at once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A Redis address; Debug and Display hide any password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl RedisUrl {
    fn redacted(&self) -> String {
        match (self.0.split_once("://"), self.0.rsplit_once('@')) {
            (Some((scheme, _)), Some((userinfo, host))) if userinfo.len() > scheme.len() => {
                format!("{scheme}://***@{host}")
            }
            _ => self.0.clone(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Which file format the configuration was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigForm {
    /// UBackup's client INI.
    Ini,
    /// ubackup's TOML.
    Toml,
}

/// Which job message the agent publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageForm {
    /// Field for field what `uuzuback_client.py` sends (default for INI).
    Legacy,
    /// ubackup's v1 job (default for TOML).
    V1,
}

/// The checksum computed on the host for v1 jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumChoice {
    /// XXH3-128 (default).
    Xxh128,
    /// SHA-256.
    Sha256,
    /// No checksum.
    None,
}

/// Whether to ask the host's own rsync daemon for the file's list entry before publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfCheck {
    /// On when something listens on `127.0.0.1:rsync_port`, off otherwise (default).
    Auto,
    /// Always; a daemon that does not answer is a failure.
    On,
    /// Never.
    Off,
}

/// How an instance's incrementals relate to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// Each incremental is taken against the previous backup (xtrabackup
    /// `--incremental-basedir` on the last incremental): v1 jobs name the previous one.
    Incremental,
    /// Each incremental is taken against the full: v1 jobs name only the full.
    Differential,
}

/// One instance section.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceConfig {
    /// The section name (`mysql3306`); names the state file and `--instance`.
    pub name: String,
    /// mysql, redis, ssdb, ...
    pub back_type: String,
    /// Instance number (usually the port).
    pub instance: i64,
    /// rsyncd module plus sub-path, e.g. `backup/database_3306`.
    pub rsync_model: String,
    /// Where the backup files are.
    pub back_dir: PathBuf,
    /// The script's log: line 1 `ok`/`wrong`, line 2 the file name or error.
    pub back_log: PathBuf,
    /// For full + incremental instances: the full's log (line 3 is added by the agent).
    pub last_all_log: Option<PathBuf>,
    /// The backup command, run with `sh -c`.
    pub script: String,
    /// Run period (`run` only); the global interval when absent.
    pub interval: Duration,
    /// Script timeout.
    pub timeout: Duration,
    /// Incremental chaining (v1 `prev_filename`).
    pub chain: ChainKind,
}

/// Logging.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// All logs appended here instead of stderr (UBackup's `log`).
    pub file: Option<PathBuf>,
    /// Warnings and errors also go here (UBackup's `error_log`).
    pub error_file: Option<PathBuf>,
    /// tracing filter.
    pub level: String,
}

/// `ubackup-agent restore` settings (`[restore]` in TOML, `restore_*` keys of `[global]` in
/// the INI); each is also a command-line flag, which wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreConfig {
    /// The indexer's URL (`https://host:port`, or `http://` to this machine).
    pub indexer: Option<String>,
    /// A file holding the indexer token.
    pub token_file: Option<PathBuf>,
    /// A file holding the nodes' restore-module password.
    pub password_file: Option<PathBuf>,
    /// The nodes' rsync daemon port.
    pub node_port: Option<u16>,
    /// The nodes' restore module.
    pub node_module: Option<String>,
    /// The restore module's user.
    pub node_user: Option<String>,
    /// The nodes' root, for plans that carry only `file_path`.
    pub node_root: Option<PathBuf>,
}

/// The self-check over TLS: this host's rsyncd sits behind a TLS terminator, which the
/// self-check asks as the nodes do (`self_check_tls_*` keys, in `[publish]` for TOML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCheckTls {
    /// The terminator's port (`self_check_tls_port`, usually 874): setting it turns TLS on.
    pub port: u16,
    /// CA certificates (PEM) to verify this host's certificate; none: the system store.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM), for a terminator that requires one (`verify = 2`).
    pub cert_file: Option<PathBuf>,
    /// Its key; none: `cert_file` holds it.
    pub key_file: Option<PathBuf>,
    /// The name verified; none: `my_ip`, the address the nodes pull from (an IP SAN).
    pub server_name: Option<String>,
}

impl SelfCheckTls {
    /// The TLS client options.
    pub fn options(&self) -> rsync_proto::client::TlsOptions {
        rsync_proto::client::TlsOptions {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone().or_else(|| self.cert_file.clone()),
            server_name: self.server_name.clone(),
            ..rsync_proto::client::TlsOptions::default()
        }
    }
}

/// The validated agent configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Which format it came from.
    pub form: ConfigForm,
    /// The host's asset id.
    pub server_id: String,
    /// Business id.
    pub game_id: i64,
    /// Reserved id.
    pub op_id: i64,
    /// The address the nodes pull from (`my_ip`).
    pub my_ip: IpAddr,
    /// Default run period, also sent as `interval`.
    pub interval: Duration,
    /// Random delay added to each scheduled run (`run`).
    pub jitter: Duration,
    /// How many instances back up at once.
    pub concurrency: usize,
    /// The queue's Redis.
    pub redis: RedisUrl,
    /// Sentinel and write confirmation of the queue's Redis (`[redis_sentinel]`).
    pub redis_ha: ubackup_redis_ha::HaSettings,
    /// The job list (`redis_queue`; `-q` overrides it).
    pub queue: String,
    /// Prefix of ubackup's own keys (heartbeat).
    pub key_prefix: String,
    /// Heartbeat TTL.
    pub heartbeat_ttl: Duration,
    /// Message form.
    pub message: MessageForm,
    /// Host checksum for v1 jobs.
    pub checksum: ChecksumChoice,
    /// Read rate cap while hashing, bytes per second.
    pub checksum_rate: Option<u64>,
    /// The host's rsync daemon port (sent in v1 jobs; used by the self-check).
    pub rsync_port: u16,
    /// Self-check mode.
    pub self_check: SelfCheck,
    /// Chain records, spool, last runs.
    pub state_dir: PathBuf,
    /// Spool bound (jobs).
    pub spool_max: usize,
    /// Logs.
    pub log: LogConfig,
    /// The instances, in file order.
    pub instances: Vec<InstanceConfig>,
    /// `restore` settings.
    pub restore: RestoreConfig,
    /// The self-check over TLS, when this host's rsyncd is TLS-fronted (stunnel/haproxy).
    pub self_check_tls: Option<SelfCheckTls>,
    /// Things that are accepted but worth a look (unknown INI keys, which UBackup ignored).
    pub warnings: Vec<ConfigProblem>,
}

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: `[section] key (line N)` for INI, `table.key` for TOML.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// The problems.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} problem(s)",
            self.path.display(),
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ubackup-agent";

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Int(i64),
    Other(&'static str),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Str(_) => "a string",
            Val::Int(_) => "an integer",
            Val::Other(k) => k,
        }
    }
}

/// Values of one section (global, or one instance), each with its display name.
#[derive(Default)]
struct Table {
    /// Shown before the key: `[global] ` or `agent.`.
    values: BTreeMap<String, (Val, String)>,
}

struct Raw {
    form: ConfigForm,
    global: Table,
    instances: Vec<(String, String, Table)>, // (name, display of the section, values)
    problems: Vec<ConfigProblem>,
    warnings: Vec<ConfigProblem>,
}

/// Typed reads from a [`Table`], recording problems in `problems`.
struct Reader<'a> {
    t: &'a mut Table,
    problems: &'a mut Vec<ConfigProblem>,
    strings_only: bool,
}

impl Reader<'_> {
    fn bad(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.into(),
            problem: problem.into(),
        });
    }

    fn take(&mut self, key: &str) -> Option<(Val, String)> {
        self.t.values.remove(key)
    }

    fn string(&mut self, key: &str) -> Option<(String, String)> {
        match self.take(key)? {
            (Val::Str(s), d) => Some((s, d)),
            (Val::Int(n), d) if self.strings_only => Some((n.to_string(), d)),
            (v, d) => {
                self.bad(d, format!("expected a string, got {}", v.kind()));
                None
            }
        }
    }

    fn required(&mut self, key: &str, missing_as: &str) -> Option<(String, String)> {
        let r = self.string(key);
        if r.is_none() && !self.problems.iter().any(|p| p.key.starts_with(missing_as)) {
            self.bad(missing_as.to_string(), "missing (required)");
        }
        match r {
            Some((s, d)) if s.trim().is_empty() => {
                self.bad(d, "empty");
                None
            }
            r => r,
        }
    }

    fn int(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        let (v, d) = self.take(key)?;
        let n = match v {
            Val::Int(n) => n,
            Val::Str(s) if self.strings_only => match s.trim().parse::<i64>() {
                Ok(n) => n,
                Err(_) => {
                    self.bad(d, format!("not an integer: {s:?}"));
                    return None;
                }
            },
            v => {
                self.bad(d, format!("expected an integer, got {}", v.kind()));
                return None;
            }
        };
        if n < min || n > max {
            self.bad(d, format!("{n} is outside {min}..={max}"));
            return None;
        }
        Some(n)
    }

    fn secs(&mut self, key: &str, min: u64) -> Option<Duration> {
        self.int(key, min as i64, 10 * 365 * 86400)
            .map(|v| Duration::from_secs(v as u64))
    }

    fn choice<T: Copy>(&mut self, key: &str, options: &[(&str, T)], default: T) -> T {
        let Some((s, d)) = self.string(key) else {
            return default;
        };
        match options.iter().find(|(n, _)| *n == s.trim()) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.bad(d, format!("{s:?} is not one of {}", names.join(", ")));
                default
            }
        }
    }

    fn path(&mut self, key: &str) -> Option<PathBuf> {
        let (s, d) = self.string(key)?;
        if s.is_empty() || s.contains('\0') {
            self.bad(d, "not a path");
            return None;
        }
        Some(PathBuf::from(s))
    }

    fn abs_path(&mut self, key: &str, missing_as: Option<&str>) -> Option<PathBuf> {
        let d = self.t.values.get(key).map(|(_, d)| d.clone());
        let p = self.path(key);
        match (&p, d, missing_as) {
            (None, None, Some(m)) => {
                self.bad(m.to_string(), "missing (required)");
            }
            (Some(p), Some(d), _) if !p.is_absolute() => {
                self.bad(
                    d,
                    format!("must be an absolute path, got {:?}", p.display()),
                );
                return None;
            }
            _ => {}
        }
        p
    }

    fn leftover(&mut self) -> Vec<String> {
        std::mem::take(&mut self.t.values)
            .into_values()
            .map(|(_, d)| d)
            .collect()
    }
}

/// A Redis key or list name: printable ASCII, no spaces.
fn is_key_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// rsync module paths and section names: relative, no `..`, printable.
fn is_safe_relative(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && s.bytes().all(|b| b.is_ascii_graphic())
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl AgentConfig {
    /// Reads and validates `path`: a file whose first section is `[global]` is UBackup's
    /// client config; anything else is TOML.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let err = |problem: String| ConfigError {
            path: path.to_path_buf(),
            problems: vec![ConfigProblem {
                key: "(file)".into(),
                problem,
            }],
        };
        let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(err(format!(
                "{} bytes is too large for a config",
                meta.len()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| err(format!("not UTF-8: {e}")))?;
        AgentConfig::parse(&text).map_err(|problems| ConfigError {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Validates configuration text (format detected as in [`AgentConfig::load`]).
    pub fn parse(text: &str) -> Result<AgentConfig, Vec<ConfigProblem>> {
        let raw = if ubackup_legacy_ini::starts_with_global(text) {
            flatten_ini(text)
        } else {
            flatten_toml(text)?
        };
        build(raw)
    }

    /// The instance named `name`.
    pub fn instance(&self, name: &str) -> Option<&InstanceConfig> {
        self.instances.iter().find(|i| i.name == name)
    }
}

/// Our names for UBackup's `[global]` keys, and our INI-only extensions.
const INI_GLOBAL: &[(&str, &str)] = &[
    ("server_id", "server_id"),
    ("game_id", "game_id"),
    ("op_id", "op_id"),
    ("interval", "interval"),
    ("redis_queue", "queue"),
    ("my_ip", "ip"),
    ("log", "log_file"),
    ("error_log", "error_log_file"),
    // ubackup's extensions (UBackup ignores unknown keys, so an old client reading this file
    // keeps working).
    ("redis_url", "redis_url"),
    // The queue's Redis through Sentinel (docs/operations.md, "Redis with Sentinel").
    ("redis_sentinel_master", "redis_sentinel_master"),
    ("redis_sentinels", "redis_sentinels"),
    ("redis_sentinel_password", "redis_sentinel_password"),
    ("redis_password", "redis_password"),
    ("redis_wait_replicas", "redis_wait_replicas"),
    ("redis_wait_timeout_ms", "redis_wait_timeout_ms"),
    ("key_prefix", "key_prefix"),
    ("heartbeat_ttl", "heartbeat_ttl"),
    ("message_form", "message"),
    ("checksum", "checksum"),
    ("checksum_rate", "checksum_rate"),
    ("rsync_port", "rsync_port"),
    ("self_check", "self_check"),
    ("state_dir", "state_dir"),
    ("spool_max", "spool_max"),
    ("concurrency", "concurrency"),
    ("timeout", "timeout"),
    ("jitter", "jitter"),
    ("log_level", "log_level"),
    ("restore_indexer", "restore_indexer"),
    ("restore_token_file", "restore_token_file"),
    ("restore_password_file", "restore_password_file"),
    ("restore_node_port", "restore_node_port"),
    ("restore_node_module", "restore_node_module"),
    ("restore_node_user", "restore_node_user"),
    ("restore_node_root", "restore_node_root"),
    ("self_check_tls_port", "self_check_tls_port"),
    ("self_check_tls_ca_file", "self_check_tls_ca_file"),
    ("self_check_tls_cert_file", "self_check_tls_cert_file"),
    ("self_check_tls_key_file", "self_check_tls_key_file"),
    ("self_check_tls_name", "self_check_tls_name"),
];

const INI_INSTANCE: &[(&str, &str)] = &[
    ("back_type", "back_type"),
    ("instance", "instance"),
    ("rsync_model", "rsync_model"),
    ("back_dir", "back_dir"),
    ("back_log", "back_log"),
    ("last_all_log", "last_all_log"),
    ("script", "script"),
    ("interval", "interval"),
    ("timeout", "timeout"),
    ("chain", "chain"),
];

fn flatten_ini(text: &str) -> Raw {
    let ini = ubackup_legacy_ini::parse(text);
    let mut raw = Raw {
        form: ConfigForm::Ini,
        global: Table::default(),
        instances: Vec::new(),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    for p in &ini.problems {
        let key = match &p.section {
            Some(s) => format!("[{s}] line {}", p.line),
            None => format!("line {}", p.line),
        };
        raw.problems.push(ConfigProblem {
            key,
            problem: p.problem.clone(),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut redis_host = None;
    let mut redis_port = None;
    for sec in &ini.sections {
        if !seen.insert(sec.name.clone()) {
            raw.problems.push(ConfigProblem {
                key: format!("[{}] (line {})", sec.name, sec.line),
                problem: "section appears twice".into(),
            });
            continue;
        }
        let global = sec.name == "global";
        let map = if global { INI_GLOBAL } else { INI_INSTANCE };
        let mut table = Table::default();
        let mut keys = std::collections::BTreeSet::new();
        for e in &sec.entries {
            let display = format!("[{}] {} (line {})", sec.name, e.key, e.line);
            if !keys.insert(e.key.clone()) {
                raw.problems.push(ConfigProblem {
                    key: display,
                    problem: "key appears twice in this section".into(),
                });
                continue;
            }
            if global && e.key == "redis_host" {
                redis_host = Some((e.value.clone(), display));
                continue;
            }
            if global && e.key == "redis_port" {
                redis_port = Some((e.value.clone(), display));
                continue;
            }
            match map.iter().find(|(k, _)| *k == e.key) {
                Some((_, ours)) => {
                    table
                        .values
                        .insert((*ours).to_string(), (Val::Str(e.value.clone()), display));
                }
                None => raw.warnings.push(ConfigProblem {
                    key: display,
                    problem: "unknown key, ignored (as uuzuback_client.py did)".into(),
                }),
            }
        }
        if global {
            if redis_host.is_some()
                || redis_port.is_some()
                || !table.values.contains_key("redis_url")
            {
                let (host, hd) = redis_host
                    .take()
                    .unwrap_or_else(|| (String::new(), "[global] redis_host".into()));
                let (port, pd) = redis_port
                    .take()
                    .unwrap_or_else(|| ("6379".into(), "[global] redis_port".into()));
                let mut ok = true;
                if host.is_empty() || host.contains(['/', '@', ' ', '?', '#']) {
                    let problem = if host.is_empty() {
                        "missing (required)".to_string()
                    } else {
                        format!("not a host: {host:?}")
                    };
                    raw.problems.push(ConfigProblem {
                        key: hd.clone(),
                        problem,
                    });
                    ok = false;
                }
                if port.parse::<u16>().map_or(true, |p| p == 0) {
                    raw.problems.push(ConfigProblem {
                        key: pd,
                        problem: format!("not a TCP port: {port:?}"),
                    });
                    ok = false;
                }
                if ok && !table.values.contains_key("redis_url") {
                    let h = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        host
                    };
                    table.values.insert(
                        "redis_url".into(),
                        (Val::Str(format!("redis://{h}:{port}/")), hd),
                    );
                }
            }
            raw.global = table;
        } else {
            raw.instances
                .push((sec.name.clone(), format!("[{}]", sec.name), table));
        }
    }
    if ini.section("global").is_none() {
        raw.problems.push(ConfigProblem {
            key: "[global]".into(),
            problem: "missing".into(),
        });
    }
    raw
}

/// `[redis_sentinel]` / `redis_sentinel_*`: the keys [`ubackup_redis_ha::HaSettings`] reads.
/// The Sentinel list is one string, comma- or space-separated.
fn redis_ha(r: &mut Reader<'_>) -> ubackup_redis_ha::HaSettings {
    let display = |r: &Reader<'_>, k: &str| {
        r.t.values
            .get(k)
            .map_or_else(|| k.to_string(), |(_, d)| d.clone())
    };
    let keys = [
        ("master_name", display(r, "redis_sentinel_master")),
        ("sentinels", display(r, "redis_sentinels")),
        ("wait_timeout_ms", display(r, "redis_wait_timeout_ms")),
    ];
    let master = r.string("redis_sentinel_master").map(|(s, _)| s);
    let sentinels = r
        .string("redis_sentinels")
        .map(|(s, _)| ubackup_redis_ha::HaSettings::split_list(&s));
    let sentinel_password = r.string("redis_sentinel_password").map(|(s, _)| s);
    let redis_password = r.string("redis_password").map(|(s, _)| s);
    let replicas = r.int("redis_wait_replicas", 0, 16).map(|n| n as u32);
    let wait = r
        .int("redis_wait_timeout_ms", 0, 3_600_000)
        .map(|ms| Duration::from_millis(ms as u64));
    match ubackup_redis_ha::HaSettings::build(
        master,
        sentinels,
        sentinel_password,
        redis_password,
        replicas,
        wait,
    ) {
        Ok(h) => h,
        Err(problems) => {
            for (field, p) in problems {
                let key = keys
                    .iter()
                    .find(|(f, _)| *f == field)
                    .map_or_else(|| field.to_string(), |(_, d)| d.clone());
                r.bad(key, p);
            }
            ubackup_redis_ha::HaSettings::default()
        }
    }
}

/// Our TOML keys, by table.
const TOML_GLOBAL: &[(&str, &str, &str)] = &[
    ("agent", "server_id", "server_id"),
    ("agent", "game_id", "game_id"),
    ("agent", "op_id", "op_id"),
    ("agent", "ip", "ip"),
    ("agent", "interval_secs", "interval"),
    ("agent", "jitter_secs", "jitter"),
    ("agent", "concurrency", "concurrency"),
    ("agent", "timeout_secs", "timeout"),
    ("agent", "state_dir", "state_dir"),
    ("redis", "url", "redis_url"),
    ("redis", "queue", "queue"),
    ("redis", "key_prefix", "key_prefix"),
    ("redis", "heartbeat_ttl_secs", "heartbeat_ttl"),
    ("redis_sentinel", "master_name", "redis_sentinel_master"),
    ("redis_sentinel", "sentinels", "redis_sentinels"),
    (
        "redis_sentinel",
        "sentinel_password",
        "redis_sentinel_password",
    ),
    ("redis_sentinel", "redis_password", "redis_password"),
    ("redis_sentinel", "wait_replicas", "redis_wait_replicas"),
    ("redis_sentinel", "wait_timeout_ms", "redis_wait_timeout_ms"),
    ("publish", "message", "message"),
    ("publish", "checksum", "checksum"),
    ("publish", "checksum_rate", "checksum_rate"),
    ("publish", "rsync_port", "rsync_port"),
    ("publish", "self_check", "self_check"),
    ("publish", "spool_max", "spool_max"),
    ("log", "file", "log_file"),
    ("log", "error_file", "error_log_file"),
    ("log", "level", "log_level"),
    ("restore", "indexer", "restore_indexer"),
    ("restore", "token_file", "restore_token_file"),
    ("restore", "password_file", "restore_password_file"),
    ("restore", "node_port", "restore_node_port"),
    ("restore", "node_module", "restore_node_module"),
    ("restore", "node_user", "restore_node_user"),
    ("restore", "node_root", "restore_node_root"),
    ("publish", "self_check_tls_port", "self_check_tls_port"),
    (
        "publish",
        "self_check_tls_ca_file",
        "self_check_tls_ca_file",
    ),
    (
        "publish",
        "self_check_tls_cert_file",
        "self_check_tls_cert_file",
    ),
    (
        "publish",
        "self_check_tls_key_file",
        "self_check_tls_key_file",
    ),
    ("publish", "self_check_tls_name", "self_check_tls_name"),
];

const TOML_INSTANCE: &[(&str, &str)] = &[
    ("back_type", "back_type"),
    ("instance", "instance"),
    ("rsync_model", "rsync_model"),
    ("back_dir", "back_dir"),
    ("back_log", "back_log"),
    ("last_all_log", "last_all_log"),
    ("script", "script"),
    ("interval_secs", "interval"),
    ("timeout_secs", "timeout"),
    ("chain", "chain"),
];

fn conv(v: &toml::Value) -> Val {
    match v {
        toml::Value::String(s) => Val::Str(s.clone()),
        toml::Value::Integer(i) => Val::Int(*i),
        toml::Value::Boolean(_) => Val::Other("a boolean"),
        toml::Value::Float(_) => Val::Other("a float"),
        toml::Value::Datetime(_) => Val::Other("a date"),
        toml::Value::Array(_) => Val::Other("a list"),
        toml::Value::Table(_) => Val::Other("a table"),
    }
}

fn flatten_toml(text: &str) -> Result<Raw, Vec<ConfigProblem>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        vec![ConfigProblem {
            key: "(syntax)".into(),
            problem: e.to_string().trim().to_string(),
        }]
    })?;
    let mut raw = Raw {
        form: ConfigForm::Toml,
        global: Table::default(),
        instances: Vec::new(),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    for (section, v) in &table {
        let Some(t) = v.as_table() else {
            raw.problems.push(ConfigProblem {
                key: section.clone(),
                problem: "expected a [table]".into(),
            });
            continue;
        };
        if section == "instances" {
            for (name, inst) in t {
                let display = format!("instances.{name}");
                let Some(it) = inst.as_table() else {
                    raw.problems.push(ConfigProblem {
                        key: display,
                        problem: "expected a [instances.NAME] table".into(),
                    });
                    continue;
                };
                let mut tab = Table::default();
                for (k, v) in it {
                    match TOML_INSTANCE.iter().find(|(n, _)| n == k) {
                        Some((_, ours)) => {
                            tab.values
                                .insert((*ours).into(), (conv(v), format!("{display}.{k}")));
                        }
                        None => raw.problems.push(ConfigProblem {
                            key: format!("{display}.{k}"),
                            problem: "unknown key".into(),
                        }),
                    }
                }
                raw.instances.push((name.clone(), display, tab));
            }
            continue;
        }
        for (k, v) in t {
            match TOML_GLOBAL.iter().find(|(s, n, _)| s == section && n == k) {
                Some((_, _, ours)) => {
                    raw.global
                        .values
                        .insert((*ours).into(), (conv(v), format!("{section}.{k}")));
                }
                None => raw.problems.push(ConfigProblem {
                    key: format!("{section}.{k}"),
                    problem: "unknown key".into(),
                }),
            }
        }
    }
    Ok(raw)
}

/// Parses `100M`, `512K`, `2G` or a plain number of bytes per second.
fn parse_rate(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix(['k', 'K']) {
        (n, 1u64 << 10)
    } else if let Some(n) = s.strip_suffix(['m', 'M']) {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix(['g', 'G']) {
        (n, 1 << 30)
    } else {
        (s, 1)
    };
    num.trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(mult)
        .filter(|&r| r > 0)
}

fn build(mut raw: Raw) -> Result<AgentConfig, Vec<ConfigProblem>> {
    let ini = raw.form == ConfigForm::Ini;
    let name_of = |ini_key: &str, toml_key: &str| {
        if ini {
            format!("[global] {ini_key}")
        } else {
            toml_key.to_string()
        }
    };
    let mut problems = std::mem::take(&mut raw.problems);
    let mut r = Reader {
        t: &mut raw.global,
        problems: &mut problems,
        strings_only: ini,
    };
    let server_id = r
        .required("server_id", &name_of("server_id", "agent.server_id"))
        .map(|(s, d)| {
            if !is_key_name(&s) || s.contains(':') {
                r.bad(
                    d,
                    format!("not usable as a server id (printable, no spaces or ':'): {s:?}"),
                );
            }
            s
        });
    let game_id = r.int("game_id", i64::MIN, i64::MAX);
    if game_id.is_none() && !r.problems.iter().any(|p| p.key.contains("game_id")) {
        r.bad(name_of("game_id", "agent.game_id"), "missing (required)");
    }
    let op_id = r.int("op_id", i64::MIN, i64::MAX).unwrap_or(0);
    let my_ip = match r.required("ip", &name_of("my_ip", "agent.ip")) {
        Some((s, d)) => match s.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                r.bad(
                    d,
                    format!("not an IP address: {s:?} (the nodes pull from this address)"),
                );
                None
            }
        },
        None => None,
    };
    let interval = r.secs("interval", 1).unwrap_or(Duration::from_secs(3600));
    let jitter = r.secs("jitter", 0).unwrap_or(Duration::ZERO);
    let concurrency = r.int("concurrency", 1, 1024).unwrap_or(4) as usize;
    let timeout = r
        .secs("timeout", 1)
        .unwrap_or(Duration::from_secs(6 * 3600));
    let state_dir = r
        .abs_path("state_dir", None)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let redis = match r.string("redis_url") {
        Some((s, d)) => {
            if !(s.starts_with("redis://") || s.starts_with("unix://"))
                || s.contains(char::is_whitespace)
            {
                r.bad(d, format!("not a redis:// URL: {}", RedisUrl(s.clone())));
            }
            RedisUrl(s)
        }
        None => {
            if !ini {
                r.bad("redis.url", "missing (required)");
            }
            RedisUrl(String::new())
        }
    };
    let redis_ha = redis_ha(&mut r);
    let queue = match r.string("queue") {
        Some((q, d)) => {
            if !is_key_name(&q) {
                r.bad(d, format!("not a list name: {q:?}"));
            }
            q
        }
        None => "uuzuback".into(),
    };
    let key_prefix = match r.string("key_prefix") {
        Some((q, d)) => {
            if !is_key_name(&q) {
                r.bad(d, format!("not a key prefix: {q:?}"));
            }
            q
        }
        None => "ubackup".into(),
    };
    let heartbeat_ttl = r.secs("heartbeat_ttl", 10);
    let message = r.choice(
        "message",
        &[("legacy", MessageForm::Legacy), ("v1", MessageForm::V1)],
        if ini {
            MessageForm::Legacy
        } else {
            MessageForm::V1
        },
    );
    let checksum = r.choice(
        "checksum",
        &[
            ("xxh128", ChecksumChoice::Xxh128),
            ("sha256", ChecksumChoice::Sha256),
            ("none", ChecksumChoice::None),
        ],
        ChecksumChoice::Xxh128,
    );
    let checksum_rate = match r.take("checksum_rate") {
        None => None,
        Some((Val::Int(n), _)) if n > 0 => Some(n as u64),
        Some((Val::Str(s), d)) => match parse_rate(&s) {
            Some(v) => Some(v),
            None => {
                r.bad(
                    d,
                    format!("not a rate (bytes per second, or 512K, 100M, 2G): {s:?}"),
                );
                None
            }
        },
        Some((v, d)) => {
            r.bad(d, format!("expected a positive rate, got {}", v.kind()));
            None
        }
    };
    let rsync_port = r.int("rsync_port", 1, 65535).unwrap_or(873) as u16;
    let self_check = r.choice(
        "self_check",
        &[
            ("auto", SelfCheck::Auto),
            ("on", SelfCheck::On),
            ("off", SelfCheck::Off),
        ],
        SelfCheck::Auto,
    );
    let spool_max = r.int("spool_max", 1, 10_000_000).unwrap_or(10_000) as usize;
    let log = LogConfig {
        file: r.abs_path("log_file", None),
        error_file: r.abs_path("error_log_file", None),
        level: r
            .string("log_level")
            .map(|(s, _)| s)
            .unwrap_or_else(|| "info".into()),
    };
    let restore = RestoreConfig {
        indexer: r.string("restore_indexer").map(|(s, d)| {
            if !s.starts_with("http://") && !s.starts_with("https://") {
                r.bad(d, format!("not an https:// or http:// URL: {s:?}"));
            }
            s
        }),
        token_file: r.abs_path("restore_token_file", None),
        password_file: r.abs_path("restore_password_file", None),
        node_port: r.int("restore_node_port", 1, 65535).map(|p| p as u16),
        node_module: r.string("restore_node_module").map(|(s, _)| s),
        node_user: r.string("restore_node_user").map(|(s, _)| s),
        node_root: r.abs_path("restore_node_root", None),
    };
    let self_check_tls = {
        let port = r.int("self_check_tls_port", 1, 65535).map(|p| p as u16);
        let ca_file = r.abs_path("self_check_tls_ca_file", None);
        let cert_file = r.abs_path("self_check_tls_cert_file", None);
        let key_file = r.abs_path("self_check_tls_key_file", None);
        let server_name = r.string("self_check_tls_name");
        match port {
            Some(port) => Some(SelfCheckTls {
                port,
                ca_file,
                cert_file,
                key_file,
                server_name: server_name.map(|(s, _)| s),
            }),
            None => {
                if ca_file.is_some() || cert_file.is_some() || key_file.is_some() {
                    r.bad(
                        "self_check_tls_port",
                        "missing: the other self_check_tls_* keys need the terminator's port",
                    );
                }
                None
            }
        }
    };
    for d in r.leftover() {
        r.bad(d, "unknown key");
    }

    let mut instances = Vec::new();
    let raw_instances = std::mem::take(&mut raw.instances);
    if raw_instances.is_empty() {
        problems.push(ConfigProblem {
            key: if ini {
                "(file)".into()
            } else {
                "instances".into()
            },
            problem: "no instance sections: nothing to back up".into(),
        });
    }
    for (name, display, mut table) in raw_instances {
        let key = |k: &str| {
            if ini {
                format!("{display} {k}")
            } else {
                format!("{display}.{k}")
            }
        };
        let mut r = Reader {
            t: &mut table,
            problems: &mut problems,
            strings_only: ini,
        };
        if !is_safe_relative(&name) || name.contains('/') {
            r.bad(
                display.clone(),
                "a section name must be printable with no '/' or spaces (it names the state file)",
            );
        }
        let back_type = r.required("back_type", &key("back_type")).map(|(s, d)| {
            if !is_safe_relative(&s) || s.contains('/') {
                r.bad(d, format!("not a backup type: {s:?}"));
            }
            s
        });
        let instance = r.int("instance", i64::MIN, i64::MAX);
        if instance.is_none()
            && !r
                .problems
                .iter()
                .any(|p| p.key.starts_with(&key("instance")))
        {
            r.bad(key("instance"), "missing (required)");
        }
        let rsync_model = r
            .required("rsync_model", &key("rsync_model"))
            .map(|(s, d)| {
                if !is_safe_relative(s.trim_end_matches('/')) {
                    r.bad(
                        d,
                        format!("not an rsync module path (module[/sub/path]): {s:?}"),
                    );
                }
                s.trim_end_matches('/').to_string()
            });
        let back_dir = r.abs_path("back_dir", Some(&key("back_dir")));
        let back_log = r.abs_path("back_log", Some(&key("back_log")));
        let last_all_log = r.abs_path("last_all_log", None);
        if last_all_log.is_some() && last_all_log == back_log {
            r.bad(key("last_all_log"), "must not be the same file as back_log");
        }
        let script = r.required("script", &key("script")).map(|(s, _)| s);
        let inst_interval = r.secs("interval", 1).unwrap_or(interval);
        let inst_timeout = r.secs("timeout", 1).unwrap_or(timeout);
        let chain = r.choice(
            "chain",
            &[
                ("incremental", ChainKind::Incremental),
                ("differential", ChainKind::Differential),
            ],
            ChainKind::Incremental,
        );
        for d in r.leftover() {
            r.bad(d, "unknown key");
        }
        if let (
            Some(back_type),
            Some(instance),
            Some(rsync_model),
            Some(back_dir),
            Some(back_log),
            Some(script),
        ) = (back_type, instance, rsync_model, back_dir, back_log, script)
        {
            instances.push(InstanceConfig {
                name,
                back_type,
                instance,
                rsync_model,
                back_dir,
                back_log,
                last_all_log,
                script,
                interval: inst_interval,
                timeout: inst_timeout,
                chain,
            });
        }
    }
    collisions(&instances, ini, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let interval_secs = interval.as_secs();
    Ok(AgentConfig {
        form: raw.form,
        server_id: server_id.unwrap_or_default(),
        game_id: game_id.unwrap_or_default(),
        op_id,
        my_ip: my_ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        interval,
        jitter,
        concurrency,
        redis,
        redis_ha,
        queue,
        key_prefix,
        heartbeat_ttl: heartbeat_ttl.unwrap_or(Duration::from_secs(
            interval_secs.saturating_mul(2).saturating_add(600),
        )),
        message,
        checksum,
        checksum_rate,
        rsync_port,
        self_check,
        state_dir,
        spool_max,
        log,
        instances,
        restore,
        self_check_tls,
        warnings: raw.warnings,
    })
}

/// Two sections with the same `back_type` and `instance` would publish jobs the nodes and the
/// indexer cannot tell apart (one catalog entry, one chain): refused, naming both sections.
fn collisions(instances: &[InstanceConfig], ini: bool, problems: &mut Vec<ConfigProblem>) {
    let shown = |name: &str| {
        if ini {
            format!("[{name}]")
        } else {
            format!("instances.{name}")
        }
    };
    let mut seen: std::collections::HashMap<(&str, i64), &str> = Default::default();
    for i in instances {
        match seen.entry((i.back_type.as_str(), i.instance)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(&i.name);
            }
            std::collections::hash_map::Entry::Occupied(o) => problems.push(ConfigProblem {
                key: shown(&i.name),
                problem: format!(
                    "same back_type ({}) and instance ({}) as {}: their jobs and catalog \
                     entries could not be told apart; give each section its own instance number",
                    i.back_type,
                    i.instance,
                    shown(o.get())
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
