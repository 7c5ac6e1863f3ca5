//! The node's configuration: our TOML (see `ubackup-puller.example.toml`), or UBackup's server
//! `uuzuback.conf` (INI) unchanged.
//!
//! Both are flattened into `section.key` values first, then one builder validates them and
//! collects *every* problem, each with the key it concerns (the legacy key name for a legacy
//! file), before anything starts.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rsync_proto::limit::Rate;
use rsync_proto::{ChecksumKind, ProtocolVersion};

mod tls;
pub use tls::{HostMatch, TlsConfig, DEFAULT_TLS_PORT, NAME_FIELDS};

/// A Redis address; Debug and Display hide any password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl RedisUrl {
    fn redacted(&self) -> String {
        // redis://[user]:password@host:port/db
        match self.0.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.0.clone(),
            },
            None => self.0.clone(),
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Which file format the configuration was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigForm {
    /// ubackup's TOML.
    Toml,
    /// UBackup's `uuzuback.conf`.
    Legacy,
}

/// Where the queue lives and how jobs are leased.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// The Redis holding the job lists.
    pub redis: RedisUrl,
    /// Job lists, highest priority first.
    pub lists: Vec<String>,
    /// Prefix of ubackup's own keys (in-flight sets, heartbeats, dead letters).
    pub key_prefix: String,
    /// A node whose heartbeat is older than this has its in-flight jobs requeued.
    pub lease: Duration,
    /// How often the heartbeat is written.
    pub heartbeat: Duration,
    /// Requeues (after node deaths) before a job goes to the dead-letter list.
    pub max_requeues: u32,
    /// The dead-letter list.
    pub dead_letter: String,
    /// The longest wait between polls of empty lists.
    pub idle_poll: Duration,
    /// Sentinel and replication settings of the queue's Redis (`[redis_sentinel]`).
    pub ha: RedisHa,
}

/// `[redis_sentinel]` (legacy: `redis_sentinel_*` keys): where the master is found, and how
/// many replicas must confirm a published result. Results on a separate Redis
/// (`results.redis`) are reached directly.
pub type RedisHa = ubackup_redis_ha::HaSettings;

/// Where results go.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsConfig {
    /// The Redis holding the result list (may be the queue's).
    pub redis: RedisUrl,
    /// The result list (UBackup's `message_queue`).
    pub list: String,
}

/// How jobs are pulled.
#[derive(Debug, Clone, PartialEq)]
pub struct PullConfig {
    /// Attempts per job (UBackup's `retry`).
    pub retry: u32,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Stall timeout.
    pub stall_timeout: Duration,
    /// A whole job's deadline.
    pub deadline: Duration,
    /// Protocol to announce.
    pub protocol: ProtocolVersion,
    /// The daemon port for jobs that do not name one (UBackup's messages never do).
    pub rsync_port: u16,
    /// Daemon password for jobs that name a user.
    pub password_file: Option<PathBuf>,
    /// The destination directory template.
    pub destination: String,
    /// Use the previous backup of the same instance as the delta basis.
    pub previous_as_basis: bool,
    /// Force a strong checksum.
    pub checksum_choice: Option<ChecksumKind>,
    /// Forward the node's rate to each daemon as `--bwlimit`.
    pub forward_bwlimit: bool,
    /// Compress transfers (None = off).
    pub compress: Option<rsync_proto::client::Compress>,
}

/// Logging.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Format.
    pub format: LogFormat,
    /// All logs go here (appended) instead of stderr.
    pub file: Option<PathBuf>,
    /// Warnings and errors also go here.
    pub error_file: Option<PathBuf>,
    /// tracing filter, e.g. `info` or `ubackup_puller=debug`.
    pub level: String,
}

/// The validated node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Which format it came from.
    pub form: ConfigForm,
    /// The node id (heartbeat key, in-flight set, results).
    pub node_id: String,
    /// This node's address, reported as `back_server_ip`.
    pub node_ip: String,
    /// The backup root.
    pub root: PathBuf,
    /// Concurrent pulls.
    pub workers: usize,
    /// Pause after each job, per worker.
    pub interval: Duration,
    /// Free space kept on the root's filesystem.
    pub reserve_bytes: u64,
    /// Node-wide rate cap.
    pub bwlimit: Option<Rate>,
    /// How long running pulls may finish at SIGTERM before they are cancelled and requeued.
    pub shutdown_grace: Duration,
    /// Queue.
    pub queue: QueueConfig,
    /// Results.
    pub results: ResultsConfig,
    /// Pulls.
    pub pull: PullConfig,
    /// Logs.
    pub log: LogConfig,
    /// Prometheus text endpoint.
    pub metrics: Option<SocketAddr>,
    /// Retention policies and the prune schedule.
    pub retention: crate::retention::Retention,
    /// The scrub's schedule and read rate.
    pub scrub: ScrubConfig,
    /// Which hosts are reached over TLS, and how (`[tls]`).
    pub tls: TlsConfig,
}

/// The scrub: how often a pass starts and how fast it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrubConfig {
    /// Time between the starts of two passes in `run` (zero: never).
    pub interval: Duration,
    /// Read rate cap (None: unlimited).
    pub rate: Option<Rate>,
}

/// The scrub's default read rate: 50 MiB/s.
pub const DEFAULT_SCRUB_RATE: u64 = 50 << 20;

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key, as written in the file.
    pub key: String,
    /// What is wrong.
    pub problem: String,
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
            write!(f, "\n  {}: {}", p.key, p.problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The placeholders a destination template may use.
pub const TEMPLATE_FIELDS: [&str; 8] = [
    "root",
    "back_type",
    "ip",
    "ip_abc",
    "ip_d",
    "server_id",
    "instance",
    "game_id",
];

/// UBackup's destination: `<root>/<back_type>/<a.b.c>/<d>`.
pub const DEFAULT_DESTINATION: &str = "{root}/{back_type}/{ip_abc}/{ip_d}";

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Val>),
    Other(&'static str),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Str(_) => "a string",
            Val::Int(_) => "an integer",
            Val::Bool(_) => "a boolean",
            Val::List(_) => "a list",
            Val::Other(k) => k,
        }
    }
}

/// Flattened `section.key` values with the key as written, and the problems found so far.
struct Raw {
    values: BTreeMap<String, (Val, String)>,
    problems: Vec<ConfigProblem>,
    legacy: bool,
}

impl Raw {
    fn bad(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.into(),
            problem: problem.into(),
        });
    }

    fn display(&self, key: &str) -> String {
        self.values
            .get(key)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| key.to_string())
    }

    fn take(&mut self, key: &str) -> Option<(Val, String)> {
        self.values.remove(key)
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            (Val::Str(s), _) => Some(s),
            (v, d) => {
                self.bad(d, format!("expected a string, got {}", v.kind()));
                None
            }
        }
    }

    fn int(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        let (v, d) = self.take(key)?;
        let n = match v {
            Val::Int(n) => n,
            Val::Str(s) if self.legacy => match s.trim().parse::<i64>() {
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

    fn secs(&mut self, key: &str, default: u64, min: u64) -> Duration {
        let v = self.int(key, min as i64, 10 * 365 * 86400);
        Duration::from_secs(v.map(|v| v as u64).unwrap_or(default))
    }

    fn boolean(&mut self, key: &str, default: bool) -> bool {
        match self.take(key) {
            None => default,
            Some((Val::Bool(b), _)) => b,
            Some((Val::Str(s), d)) if self.legacy => match s.trim() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    self.bad(d, format!("not a boolean: {s:?}"));
                    default
                }
            },
            Some((v, d)) => {
                self.bad(d, format!("expected a boolean, got {}", v.kind()));
                default
            }
        }
    }

    fn list(&mut self, key: &str) -> Option<Vec<String>> {
        match self.take(key)? {
            (Val::List(items), d) => {
                let mut out = Vec::new();
                for i in items {
                    match i {
                        Val::Str(s) => out.push(s),
                        v => self.bad(d.clone(), format!("expected strings, got {}", v.kind())),
                    }
                }
                Some(out)
            }
            (Val::Str(s), _) if self.legacy => {
                Some(s.split_whitespace().map(str::to_string).collect())
            }
            (v, d) => {
                self.bad(d, format!("expected a list of strings, got {}", v.kind()));
                None
            }
        }
    }

    fn path(&mut self, key: &str) -> Option<PathBuf> {
        let d = self.display(key);
        let s = self.string(key)?;
        if s.is_empty() || s.contains('\0') {
            self.bad(d, "not a path");
            return None;
        }
        Some(PathBuf::from(s))
    }
}

/// A Redis key or list name: printable, no spaces (UBackup's `redis_queue` is split on them).
fn is_key_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic())
}

impl NodeConfig {
    /// Reads and validates `path`. A file whose first section is `[global]` is UBackup's
    /// `uuzuback.conf`; anything else is TOML.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let err = |problem: String| ConfigError {
            path: path.to_path_buf(),
            problems: vec![ConfigProblem {
                key: "(file)".into(),
                problem,
            }],
        };
        let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
        if meta.len() > 1 << 20 {
            return Err(err(format!(
                "{} bytes is too large for a config",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        NodeConfig::parse(&text).map_err(|problems| ConfigError {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Validates configuration text (format detected as in [`NodeConfig::load`]).
    pub fn parse(text: &str) -> Result<NodeConfig, Vec<ConfigProblem>> {
        let legacy = ubackup_legacy_ini::starts_with_global(text);
        let raw = if legacy {
            flatten_legacy(text)?
        } else {
            flatten_toml(text)?
        };
        build(raw)
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
        values: BTreeMap::new(),
        problems: Vec::new(),
        legacy: false,
    };
    fn conv(v: &toml::Value) -> Val {
        match v {
            toml::Value::String(s) => Val::Str(s.clone()),
            toml::Value::Integer(i) => Val::Int(*i),
            toml::Value::Boolean(b) => Val::Bool(*b),
            toml::Value::Array(a) => Val::List(a.iter().map(conv).collect()),
            toml::Value::Float(_) => Val::Other("a float"),
            toml::Value::Datetime(_) => Val::Other("a date"),
            toml::Value::Table(_) => Val::Other("a table"),
        }
    }
    // Nested tables ([retention.mysql.game.31]) flatten to dotted keys.
    fn add(raw: &mut Raw, prefix: &str, t: &toml::Table) {
        for (k, v) in t {
            let key = format!("{prefix}.{k}");
            match v {
                toml::Value::Table(inner) => add(raw, &key, inner),
                v => {
                    raw.values.insert(key.clone(), (conv(v), key));
                }
            }
        }
    }
    for (section, v) in &table {
        match v {
            toml::Value::Table(t) => add(&mut raw, section, t),
            _ => raw.bad(section.clone(), "expected a [section]"),
        }
    }
    Ok(raw)
}

/// Maps UBackup's `[global]` keys (server/uuzuback.conf) onto ours.
fn flatten_legacy(text: &str) -> Result<Raw, Vec<ConfigProblem>> {
    let mut raw = Raw {
        values: BTreeMap::new(),
        problems: Vec::new(),
        legacy: true,
    };
    let ini = ubackup_legacy_ini::parse(text);
    for p in &ini.problems {
        raw.bad(format!("line {}", p.line), p.problem.clone());
    }
    // Only [global] is the server's; a repeated key keeps its last value, as ConfigParser did.
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    for sec in ini.sections.iter().filter(|s| s.name == "global") {
        for e in &sec.entries {
            global.insert(e.key.clone(), e.value.clone());
        }
    }
    let mut put = |ours: &str, legacy: &str, v: Val| {
        raw.values.insert(ours.to_string(), (v, legacy.to_string()));
    };
    let mut redis_host = None;
    let mut redis_port = None;
    let mut msg_host = None;
    let mut msg_port = None;
    let mut tls_keys = Vec::new();
    for (k, v) in global {
        let s = Val::Str(v.clone());
        match k.as_str() {
            "work_thread" => put("node.workers", "work_thread", s),
            "rsync_bwlimit" => put("node.bwlimit", "rsync_bwlimit", s),
            "server_root_path" => put("node.root", "server_root_path", s),
            "reserve" => put("node.reserve_gib", "reserve", s),
            "interval" => put("node.interval_secs", "interval", s),
            "myip" => put("node.ip", "myip", s),
            "node_id" => put("node.id", "node_id", s),
            "retry" => put("pull.retry", "retry", s),
            // ubackup's extension: the port of the hosts' rsync daemons when it is not 873.
            "rsync_port" => put("pull.rsync_port", "rsync_port", s),
            // ubackup's extension: seconds a pull may go without a byte before it is retried.
            "stall_timeout" => put("pull.stall_timeout_secs", "stall_timeout", s),
            "redis_queue" => put("queue.lists", "redis_queue", s),
            "message_queue" => put("results.list", "message_queue", s),
            "log" => put("log.file", "log", s),
            "error_log" => put("log.error_file", "error_log", s),
            "redis_host" => redis_host = Some(v),
            "redis_port" => redis_port = Some(v),
            "message_redis_host" => msg_host = Some(v),
            "message_redis_port" => msg_port = Some(v),
            // Reserved in UBackup and never read: honoured only once `apply_keeptime` says so.
            "mysqlkeeptime" => put("retention.mysql.keep_days", "mysqlkeeptime", s),
            "rediskeeptime" => put("retention.redis.keep_days", "rediskeeptime", s),
            "apply_keeptime" => put("retention.apply_keeptime", "apply_keeptime", s),
            // ubackup's extension: TLS (see config/tls.rs).
            k if tls::is_legacy_key(k) => tls_keys.push((k.to_string(), v)),
            // ubackup's extension: the queue's Redis through Sentinel (see [redis_sentinel]).
            "redis_sentinel_master" => put("redis_sentinel.master_name", &k, s),
            "redis_sentinels" => put("redis_sentinel.sentinels", &k, s),
            "redis_sentinel_password" => put("redis_sentinel.sentinel_password", &k, s),
            "redis_password" => put("redis_sentinel.redis_password", &k, s),
            "redis_wait_replicas" => put("redis_sentinel.wait_replicas", &k, s),
            "redis_wait_timeout_ms" => put("redis_sentinel.wait_timeout_ms", &k, s),
            other => put(&format!("legacy.{other}"), other, s),
        }
    }
    for (k, v) in tls_keys {
        tls::put_legacy(&mut raw, &k, &v);
    }
    let mut url = |host: Option<String>, port: Option<String>, hk: &str, pk: &str| {
        let host = host.unwrap_or_else(|| "127.0.0.1".into());
        let port = port.unwrap_or_else(|| "6379".into());
        if port.parse::<u16>().is_err() {
            raw.bad(pk, format!("not a port: {port:?}"));
        }
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            raw.bad(hk, format!("not a host: {host:?}"));
        }
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Val::Str(format!("redis://{host}:{port}/"))
    };
    let q = url(redis_host, redis_port, "redis_host", "redis_port");
    let m = url(
        msg_host,
        msg_port,
        "message_redis_host",
        "message_redis_port",
    );
    raw.values
        .insert("queue.redis".into(), (q, "redis_host".into()));
    raw.values
        .insert("results.redis".into(), (m, "message_redis_host".into()));
    Ok(raw)
}

fn build(mut raw: Raw) -> Result<NodeConfig, Vec<ConfigProblem>> {
    let form = if raw.legacy {
        ConfigForm::Legacy
    } else {
        ConfigForm::Toml
    };
    // [node]
    let root = raw.path("node.root");
    if root.is_none() && !raw.problems.iter().any(|p| p.key.contains("root")) {
        let key = if raw.legacy {
            "server_root_path"
        } else {
            "node.root"
        };
        raw.bad(key, "missing: the backup root");
    }
    let node_ip = raw.string("node.ip");
    let node_id = raw.string("node.id");
    let node_id_key = raw.display("node.id");
    let node_id = node_id.or_else(|| node_ip.clone()).unwrap_or_else(hostname);
    if !is_key_name(&node_id) || node_id.contains(':') {
        raw.bad(node_id_key, format!("not usable as a node id: {node_id:?}"));
    }
    let node_ip = node_ip.unwrap_or_else(|| "127.0.0.1".into());
    let workers = raw.int("node.workers", 1, 256).unwrap_or(4) as usize;
    let interval = raw.secs("node.interval_secs", 0, 0);
    let reserve_gib = raw.int("node.reserve_gib", 0, 1 << 30).unwrap_or(0) as u64;
    let bw_key = raw.display("node.bwlimit");
    let bwlimit = match raw.take("node.bwlimit") {
        None => None,
        Some((Val::Str(s), _)) => match Rate::parse_bwlimit(&s) {
            Ok(r) => r,
            Err(e) => {
                raw.bad(bw_key, e.to_string());
                None
            }
        },
        Some((Val::Int(n), _)) if n >= 0 => {
            Some(Rate::bytes_per_sec((n as u64).saturating_mul(1024))).filter(|_| n > 0)
        }
        Some((v, _)) => {
            raw.bad(bw_key, format!("expected a rate, got {}", v.kind()));
            None
        }
    };
    let shutdown_grace = raw.secs("node.shutdown_grace_secs", 60, 0);

    // [queue]
    let queue_redis = redis_url(&mut raw, "queue.redis");
    let lists_key = raw.display("queue.lists");
    let lists = raw
        .list("queue.lists")
        .unwrap_or_else(|| vec!["uuzuback".into()]);
    if lists.is_empty() {
        raw.bad(lists_key.clone(), "no job lists");
    }
    for l in &lists {
        if !is_key_name(l) {
            raw.bad(lists_key.clone(), format!("not a list name: {l:?}"));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for l in &lists {
        if !seen.insert(l) {
            raw.bad(lists_key.clone(), format!("{l:?} is listed twice"));
        }
    }
    let prefix_key = raw.display("queue.key_prefix");
    let key_prefix = raw
        .string("queue.key_prefix")
        .unwrap_or_else(|| "ubackup".into());
    if !is_key_name(&key_prefix) {
        raw.bad(prefix_key, format!("not a key prefix: {key_prefix:?}"));
    }
    let heartbeat = raw.secs("queue.heartbeat_secs", 5, 1);
    let lease_key = raw.display("queue.lease_secs");
    let lease = raw.secs("queue.lease_secs", 30, 2);
    if lease < heartbeat * 2 {
        raw.bad(
            lease_key,
            format!("must be at least twice queue.heartbeat_secs ({heartbeat:?})"),
        );
    }
    let max_requeues = raw.int("queue.max_requeues", 0, 1000).unwrap_or(5) as u32;
    let dead_key = raw.display("queue.dead_letter");
    let dead_letter = raw
        .string("queue.dead_letter")
        .unwrap_or_else(|| format!("{key_prefix}:dead"));
    if !is_key_name(&dead_letter) || lists.contains(&dead_letter) {
        raw.bad(dead_key, format!("not a usable list name: {dead_letter:?}"));
    }
    let idle_ms = raw.int("queue.idle_poll_ms", 50, 10_000).unwrap_or(1000);

    // [results]
    let results_redis = if raw.values.contains_key("results.redis") {
        redis_url(&mut raw, "results.redis")
    } else {
        queue_redis.clone()
    };
    let rl_key = raw.display("results.list");
    let results_list = raw
        .string("results.list")
        .unwrap_or_else(|| "message".into());
    if !is_key_name(&results_list) || lists.contains(&results_list) {
        raw.bad(rl_key, format!("not a usable list name: {results_list:?}"));
    }

    let ha = redis_ha(&mut raw);

    // [pull]
    let retry = raw.int("pull.retry", 1, 100).unwrap_or(3) as u32;
    let connect_timeout = raw.secs("pull.connect_timeout_secs", 30, 1);
    let stall_timeout = raw.secs("pull.stall_timeout_secs", 300, 1);
    let deadline = raw.secs("pull.deadline_secs", 6 * 3600, 1);
    let protocol_key = raw.display("pull.protocol");
    let protocol = match raw.int("pull.protocol", 0, 1000) {
        None => ProtocolVersion::default(),
        Some(p) => ProtocolVersion::new(p as u32).unwrap_or_else(|| {
            raw.bad(protocol_key, format!("protocol {p} is not one of 29-32"));
            ProtocolVersion::default()
        }),
    };
    let rsync_port = raw.int("pull.rsync_port", 1, 65535).unwrap_or(873) as u16;
    let password_file = raw.path("pull.password_file");
    let dest_key = raw.display("pull.destination");
    let destination = raw
        .string("pull.destination")
        .unwrap_or_else(|| DEFAULT_DESTINATION.into());
    if let Err(e) = check_template(&destination) {
        raw.bad(dest_key, e);
    }
    let basis_key = raw.display("pull.basis");
    let previous_as_basis = match raw.string("pull.basis").as_deref() {
        None | Some("previous") => true,
        Some("none") => false,
        Some(other) => {
            raw.bad(
                basis_key,
                format!("{other:?} is not \"previous\" or \"none\""),
            );
            true
        }
    };
    let cc_key = raw.display("pull.checksum_choice");
    let checksum_choice = raw.string("pull.checksum_choice").and_then(|n| {
        let k = ChecksumKind::from_name(&n);
        if k.is_none() {
            raw.bad(cc_key, format!("unknown checksum {n:?}"));
        }
        k
    });
    let forward_bwlimit = raw.boolean("pull.forward_bwlimit", false);
    let comp_key = raw.display("pull.compress");
    let compress_choice = match raw.string("pull.compress").as_deref() {
        None | Some("none") => Ok(None),
        Some("auto") => Ok(Some(None)),
        Some(name) => match rsync_proto::CompressionKind::from_name(name) {
            Some(k) => Ok(Some(Some(k))),
            None => {
                raw.bad(
                    comp_key,
                    format!("{name:?} is not none, auto, zstd, lz4, zlibx or zlib"),
                );
                Err(())
            }
        },
    };
    let level = raw
        .int("pull.compress_level", -131072, 22)
        .map(|l| l as i32);
    let skip = raw.list("pull.skip_compress");
    let compress = match compress_choice {
        Ok(Some(choice)) => {
            let mut c = rsync_proto::client::Compress {
                choice,
                level,
                ..Default::default()
            };
            if let Some(s) = skip {
                c.skip_suffixes = s
                    .iter()
                    .map(|x| x.trim_start_matches('.').to_ascii_lowercase())
                    .collect();
            }
            Some(c)
        }
        _ => None,
    };

    // [log]
    let fmt_key = raw.display("log.format");
    let format = match raw.string("log.format").as_deref() {
        None | Some("human") => LogFormat::Human,
        Some("json") => LogFormat::Json,
        Some(other) => {
            raw.bad(fmt_key, format!("{other:?} is not \"human\" or \"json\""));
            LogFormat::Human
        }
    };
    let file = raw.path("log.file");
    let error_file = raw.path("log.error_file");
    let level = raw.string("log.level").unwrap_or_else(|| "info".into());

    // [metrics]
    let m_key = raw.display("metrics.listen");
    let metrics = raw.string("metrics.listen").and_then(|s| match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            raw.bad(m_key, format!("not an address:port: {s:?}"));
            None
        }
    });

    // [retention], [scrub]
    let retention = retention_config(&mut raw);
    let scrub_interval = raw.secs("scrub.interval_secs", 86400, 0);
    let scrub_rate =
        rate_value(&mut raw, "scrub.rate").unwrap_or(Some(Rate::bytes_per_sec(DEFAULT_SCRUB_RATE)));

    // [tls]
    let tls = tls::tls_config(&mut raw);

    let leftover: Vec<String> = raw.values.values().map(|(_, d)| d.clone()).collect();
    for d in leftover {
        raw.bad(d, "unknown key");
    }
    if !raw.problems.is_empty() {
        return Err(raw.problems);
    }
    Ok(NodeConfig {
        form,
        node_id,
        node_ip,
        root: root.unwrap_or_default(),
        workers,
        interval,
        reserve_bytes: reserve_gib << 30,
        bwlimit,
        shutdown_grace,
        queue: QueueConfig {
            redis: queue_redis,
            lists,
            key_prefix,
            lease,
            heartbeat,
            max_requeues,
            dead_letter,
            idle_poll: Duration::from_millis(idle_ms as u64),
            ha,
        },
        results: ResultsConfig {
            redis: results_redis,
            list: results_list,
        },
        pull: PullConfig {
            retry,
            connect_timeout,
            stall_timeout,
            deadline,
            protocol,
            rsync_port,
            password_file,
            destination,
            previous_as_basis,
            checksum_choice,
            forward_bwlimit,
            compress,
        },
        log: LogConfig {
            format,
            file,
            error_file,
            level,
        },
        metrics,
        retention,
        scrub: ScrubConfig {
            interval: scrub_interval,
            rate: scrub_rate,
        },
        tls,
    })
}

/// `[redis_sentinel]`: master_name, sentinels (a list, or one comma-separated string),
/// sentinel_password, redis_password, wait_replicas, wait_timeout_ms.
fn redis_ha(raw: &mut Raw) -> RedisHa {
    let keys = |field: &str, raw: &Raw| raw.display(&format!("redis_sentinel.{field}"));
    let displays: Vec<(&str, String)> = ["master_name", "sentinels", "wait_timeout_ms"]
        .into_iter()
        .map(|f| (f, keys(f, raw)))
        .collect();
    let sentinels = match raw.take("redis_sentinel.sentinels") {
        Some((Val::Str(s), _)) => Some(ubackup_redis_ha::HaSettings::split_list(&s)),
        Some((v, d)) => {
            raw.values.insert("redis_sentinel.sentinels".into(), (v, d));
            raw.list("redis_sentinel.sentinels")
        }
        None => None,
    };
    let master = raw.string("redis_sentinel.master_name");
    let sentinel_password = raw.string("redis_sentinel.sentinel_password");
    let redis_password = raw.string("redis_sentinel.redis_password");
    let replicas = raw.int("redis_sentinel.wait_replicas", 0, 16);
    let wait_ms = raw.int("redis_sentinel.wait_timeout_ms", 0, 3_600_000);
    match ubackup_redis_ha::HaSettings::build(
        master,
        sentinels,
        sentinel_password,
        redis_password,
        replicas.map(|r| r as u32),
        wait_ms.map(|ms| Duration::from_millis(ms as u64)),
    ) {
        Ok(h) => h,
        Err(problems) => {
            for (field, p) in problems {
                let key = displays
                    .iter()
                    .find(|(f, _)| *f == field)
                    .map_or_else(|| format!("redis_sentinel.{field}"), |(_, d)| d.clone());
                raw.bad(key, p);
            }
            RedisHa::default()
        }
    }
}

/// A rate in rsync's `--bwlimit` syntax, or an integer in KiB/s; `Some(None)` = unlimited.
fn rate_value(raw: &mut Raw, key: &str) -> Option<Option<Rate>> {
    let d = raw.display(key);
    match raw.take(key)? {
        (Val::Str(s), _) => match Rate::parse_bwlimit(&s) {
            Ok(r) => Some(r),
            Err(e) => {
                raw.bad(d, e.to_string());
                None
            }
        },
        (Val::Int(n), _) if n >= 0 => {
            Some(Some(Rate::bytes_per_sec((n as u64).saturating_mul(1024))).filter(|_| n > 0))
        }
        (v, _) => {
            raw.bad(d, format!("expected a rate, got {}", v.kind()));
            None
        }
    }
}

/// `[retention]`: the default policy and schedule, `[retention.<back_type>]` and
/// `[retention.<back_type>.game.<game_id>]`; UBackup's `mysqlkeeptime`/`rediskeeptime`
/// arrive as `retention.mysql.keep_days` / `retention.redis.keep_days`, and are applied only
/// with `apply_keeptime = yes` (UBackup never applied them, so a drop-in node must not start
/// deleting what its operator may have kept longer by other means).
fn retention_config(raw: &mut Raw) -> crate::retention::Retention {
    use crate::retention::{Policy, Retention};
    const MAX_DAYS: i64 = 100 * 366;
    let interval = raw.secs("retention.interval_secs", 3600, 0);
    let apply_keeptime = !raw.legacy || raw.boolean("retention.apply_keeptime", false);
    let from = |raw: &Raw, key: &str| {
        let d = raw.display(key);
        d.strip_suffix(".keep_days")
            .map(str::to_string)
            .unwrap_or(d)
    };
    let mut default = Policy::default();
    if let Some(k) = raw.int("retention.keep_days", 0, MAX_DAYS) {
        default.keep_days = k as u32;
        default.from = "retention".into();
    }
    if let Some(m) = raw.int("retention.min_fulls", 1, 1000) {
        default.min_fulls = m as u32;
    }
    // (type, game) -> (keep_days, min_fulls, from)
    type Over = (Option<u32>, Option<u32>, Option<String>);
    let mut types: BTreeMap<String, Over> = BTreeMap::new();
    let mut games: BTreeMap<(String, i64), Over> = BTreeMap::new();
    let keys: Vec<String> = raw
        .values
        .keys()
        .filter(|k| k.starts_with("retention."))
        .cloned()
        .collect();
    for key in keys {
        let parts: Vec<&str> = key.split('.').collect();
        let (slot, field) = match parts.as_slice() {
            ["retention", ty, field] => (types.entry(ty.to_string()).or_default(), *field),
            ["retention", ty, "game", id, field] => match id.parse::<i64>() {
                Ok(g) => (games.entry((ty.to_string(), g)).or_default(), *field),
                Err(_) => {
                    let d = raw.display(&key);
                    raw.take(&key);
                    raw.bad(d, format!("{id:?} is not a game_id"));
                    continue;
                }
            },
            _ => continue, // left for "unknown key"
        };
        match field {
            "keep_days" => {
                let f = from(raw, &key);
                if let Some(v) = raw.int(&key, 0, MAX_DAYS) {
                    slot.0 = Some(v as u32);
                    slot.2 = Some(f);
                }
            }
            "min_fulls" => slot.1 = raw.int(&key, 1, 1000).map(|v| v as u32),
            _ => {}
        }
    }
    let resolve = |base: &Policy, o: &Over| Policy {
        keep_days: o.0.unwrap_or(base.keep_days),
        min_fulls: o.1.unwrap_or(base.min_fulls),
        from: o.2.clone().unwrap_or_else(|| base.from.clone()),
    };
    let mut r = Retention {
        interval,
        ..Retention::default()
    };
    for (ty, o) in &types {
        r.types.insert(ty.clone(), resolve(&default, o));
    }
    for ((ty, g), o) in &games {
        let base = r.types.get(ty).cloned().unwrap_or_else(|| default.clone());
        r.games.insert((ty.clone(), *g), resolve(&base, o));
    }
    r.default = default;
    if !apply_keeptime {
        let set: Vec<String> = r
            .types
            .values()
            .filter(|p| p.keep_days > 0)
            .map(|p| format!("{} = {}", p.from, p.keep_days))
            .collect();
        if !set.is_empty() {
            r = Retention {
                interval,
                not_applied: Some(format!(
                    "{} not applied: UBackup never applied them; set apply_keeptime = yes in [global] to delete backups older than that",
                    set.join(", ")
                )),
                ..Retention::default()
            };
        }
    }
    r
}

fn redis_url(raw: &mut Raw, key: &str) -> RedisUrl {
    let d = raw.display(key);
    let s = raw
        .string(key)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    if !(s.starts_with("redis://") || s.starts_with("unix://")) || s.contains(char::is_whitespace) {
        raw.bad(d, format!("not a redis:// URL: {}", RedisUrl(s.clone())));
    }
    RedisUrl(s)
}

/// Checks that every `{placeholder}` is known, braces balance, and no component is `..`
/// (a template names its directory outright; `{root}/..` would only hide a way out of it).
pub fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some((before, after)) = rest.split_once('{') {
        if before.contains('}') {
            return Err(format!("unmatched '}}' in {t:?}"));
        }
        let (name, tail) = after
            .split_once('}')
            .ok_or_else(|| format!("unclosed '{{' in {t:?}"))?;
        if !TEMPLATE_FIELDS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} (known: {})",
                TEMPLATE_FIELDS.join(", ")
            ));
        }
        rest = tail;
    }
    if rest.contains('}') {
        return Err(format!("unmatched '}}' in {t:?}"));
    }
    if !t.starts_with("{root}") && !t.starts_with('/') {
        return Err("must start with {root} or an absolute path".into());
    }
    if t.split('/').any(|c| c == "..") {
        return Err(format!("'..' in {t:?}: name the directory itself"));
    }
    Ok(())
}

/// This host's name.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests;
