//! Starting, watching and stopping the whole system.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use ubackup_testkit::daemon::{DaemonBuilder, Module, RsyncDaemon};
use ubackup_testkit::http::Client;
use ubackup_testkit::redis::RedisServer;
use ubackup_testkit::rsync::RsyncVersion;
use ubackup_testkit::sentinel::{SentinelSet, MASTER_NAME};

use crate::proc::Daemon;
use crate::scripts;

/// The user and password of the nodes' read-only restore modules.
pub const RESTORE_USER: &str = "restore";
/// The restore modules' name.
pub const RESTORE_MODULE: &str = "ubackup";

/// What to start.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Where everything lives (configs, scripts, backups, node roots, logs, the catalog).
    pub dir: PathBuf,
    /// Where `ubackup-agent`, `ubackup-puller` and `ubackup-indexer` are.
    pub bin_dir: PathBuf,
    /// Every instance's backup period.
    pub interval_secs: u64,
    /// The overdue rule's grace after the interval.
    pub grace_secs: u64,
    /// The dashboard's port (0: picked at run time).
    pub http_port: u16,
    /// The admin's password.
    pub admin_password: String,
    /// The list nodes publish results on and the indexer reads (UBackup's `message`).
    pub results_list: String,
    /// The indexer's `forward_list` (migration from UBackup), if any.
    pub forward_list: Option<String>,
}

impl FleetOptions {
    /// The options of an end-to-end test in `dir`: the workspace's binaries, results on
    /// `message`, every instance backed up every `interval_secs`. None (a skip) when
    /// redis-server or rsync 3.5.0 is missing and `UBACKUP_INTEROP=required` is not set.
    pub fn for_tests(dir: &Path, interval_secs: u64, grace_secs: u64) -> Option<FleetOptions> {
        ubackup_testkit::redis::require_redis()?;
        ubackup_testkit::rsync::require_rsync(RsyncVersion::V3_5_0)?;
        let mut bin_dir = None;
        for name in ["ubackup-agent", "ubackup-puller", "ubackup-indexer"] {
            let p = ubackup_testkit::bins::workspace_binary(name)
                .unwrap_or_else(|e| panic!("building {name}: {e:#}"));
            bin_dir = p.parent().map(Path::to_path_buf);
        }
        Some(FleetOptions {
            dir: dir.to_path_buf(),
            bin_dir: bin_dir?,
            interval_secs,
            grace_secs,
            http_port: 0,
            admin_password: "e2e-admin-password".into(),
            results_list: "message".into(),
            forward_list: None,
        })
    }
}

/// One backed-up instance on a simulated database host.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The section name in the agent's config.
    pub section: String,
    /// `mysql` or `redis`.
    pub back_type: String,
    /// The instance number.
    pub instance: i64,
    /// Where its script writes backups.
    pub back_dir: PathBuf,
    /// Full + incremental (has a `last_all_log`).
    pub chained: bool,
}

impl Instance {
    /// Makes its script fail (`true`) or succeed again (`false`) from its next run on.
    pub fn set_failing(&self, fail: bool) -> anyhow::Result<()> {
        let flag = self.back_dir.join("FAIL");
        if fail {
            std::fs::write(&flag, b"")?;
        } else if flag.exists() {
            std::fs::remove_file(&flag)?;
        }
        Ok(())
    }

    /// The backups its script completed so far (its ledger), in order.
    pub fn ledger(&self) -> anyhow::Result<Vec<String>> {
        match std::fs::read_to_string(self.back_dir.join(".ledger")) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// The backup files its script made so far, oldest first.
    pub fn files(&self) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(&self.back_dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".xb") || n.ends_with(".rdb"))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// A simulated database host: an rsync daemon exporting its backups, scripts, and an agent.
#[derive(Debug)]
pub struct Host {
    /// Its asset id (`server_id`).
    pub server_id: String,
    /// Its business (`game_id`).
    pub game_id: i64,
    /// Its instances.
    pub instances: Vec<Instance>,
    /// The agent's config file.
    pub config: PathBuf,
    /// `ubackup-agent run`.
    pub agent: Daemon,
    /// The host's rsync daemon (module `backup`).
    pub rsyncd: RsyncDaemon,
}

/// A backup node and its restore export.
#[derive(Debug)]
pub struct Node {
    /// `node.id`.
    pub id: String,
    /// `node.root`.
    pub root: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// `ubackup-puller run`.
    pub puller: Daemon,
    /// The read-only, password-protected module exporting `root` for restores.
    pub export: RsyncDaemon,
    /// Where its `/metrics` listens.
    pub metrics: SocketAddr,
}

/// The Redis every daemon of the fleet uses: one server, or the master of a Sentinel set that
/// the daemons find (and follow across failovers) through `[redis_sentinel]`.
#[derive(Debug)]
pub enum FleetRedis {
    /// One `redis-server` at a fixed address.
    Single(RedisServer),
    /// A master, its replicas and three Sentinels (testkit's [`SentinelSet`]).
    Sentinel(SentinelSet),
}

impl FleetRedis {
    /// The URL of the server that is the master now (in a Sentinel set, as the Sentinels
    /// say; the first master when none answers).
    pub fn url(&self) -> String {
        match self {
            FleetRedis::Single(r) => r.url(),
            FleetRedis::Sentinel(set) => match set.master_port() {
                Ok(p) => format!("redis://127.0.0.1:{p}/"),
                Err(_) => set.servers[0].url(),
            },
        }
    }

    /// Stops every server (and Sentinel).
    pub fn stop(&mut self) {
        match self {
            FleetRedis::Single(r) => r.stop(),
            FleetRedis::Sentinel(set) => {
                for s in &mut set.sentinels {
                    s.kill();
                }
                for r in &mut set.servers {
                    r.stop();
                }
            }
        }
    }
}

/// How a daemon's configuration names its Redis: the `redis://` URL, and the Sentinel set
/// (master name, Sentinel addresses) when the master is found through one.
#[derive(Debug, Clone)]
pub struct RedisAccess {
    /// The URL (in Sentinel mode only its database number is used).
    pub url: String,
    /// `(master_name, ["127.0.0.1:PORT", …])`.
    pub sentinel: Option<(String, Vec<String>)>,
}

impl RedisAccess {
    /// The `[redis_sentinel]` table of a daemon's TOML, or nothing.
    fn section(&self) -> String {
        match &self.sentinel {
            Some((name, addrs)) => format!(
                "\n[redis_sentinel]\nmaster_name = {name:?}\nsentinels = {:?}\n",
                addrs.join(",")
            ),
            None => String::new(),
        }
    }
}

impl From<&RedisServer> for RedisAccess {
    fn from(r: &RedisServer) -> RedisAccess {
        RedisAccess {
            url: r.url(),
            sentinel: None,
        }
    }
}

impl From<&FleetRedis> for RedisAccess {
    fn from(r: &FleetRedis) -> RedisAccess {
        match r {
            FleetRedis::Single(r) => r.into(),
            FleetRedis::Sentinel(set) => RedisAccess {
                url: set.servers[0].url(),
                sentinel: Some((MASTER_NAME.to_string(), set.sentinel_addrs())),
            },
        }
    }
}

/// Everything, running.
#[derive(Debug)]
pub struct Fleet {
    /// The options it was started with.
    pub opts: FleetOptions,
    /// The queue and results Redis.
    pub redis: FleetRedis,
    /// The database hosts.
    pub hosts: Vec<Host>,
    /// The backup nodes.
    pub nodes: Vec<Node>,
    /// `ubackup-indexer run`.
    pub indexer: Daemon,
    /// The indexer's config file.
    pub indexer_config: PathBuf,
    /// Where the indexer's HTTP server listens.
    pub http: SocketAddr,
    /// An admin's API token.
    pub token: String,
    /// The restore password of the nodes' export modules.
    pub restore_password: String,
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn write_script(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn bin(opts: &FleetOptions, name: &str) -> anyhow::Result<PathBuf> {
    let p = opts.bin_dir.join(name);
    if !p.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p {name}`",
            p.display()
        );
    }
    Ok(p)
}

/// Polls `f` every 100 ms until it returns `Some`, or fails after `timeout` naming `what`.
/// An error from `f` (a process that died, a refused request) ends the wait at once.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().with_context(|| format!("while waiting for {what}"))? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Fleet {
    /// Starts everything: Redis, two database hosts with their agents, two nodes with their
    /// restore exports, and the indexer with an admin user and token.
    pub fn start(opts: FleetOptions) -> anyhow::Result<Fleet> {
        let redis = RedisServer::start().context("redis-server is not installed")?;
        Fleet::start_on(opts, FleetRedis::Single(redis))
    }

    /// Like [`Fleet::start`], on `redis` (a Sentinel set: every daemon gets `[redis_sentinel]`).
    pub fn start_on(opts: FleetOptions, redis: FleetRedis) -> anyhow::Result<Fleet> {
        std::fs::create_dir_all(&opts.dir)?;
        let dir = opts.dir.canonicalize()?;
        let opts = FleetOptions { dir, ..opts };
        let access = RedisAccess::from(&redis);
        let restore_password = format!("r{:x}", rand_u64());

        let mut nodes: Vec<Node> = Vec::new();
        for i in 1..=2 {
            let port = nodes.first().map(|n| n.export.port());
            nodes.push(start_node(
                &opts,
                access.clone(),
                i,
                &restore_password,
                None,
                port,
            )?);
        }
        let (indexer, indexer_config, http, token) = start_indexer(&opts, access.clone(), &nodes)?;
        let mut hosts = Vec::new();
        for i in 1..=2 {
            hosts.push(start_host(&opts, &access, i)?);
        }
        Ok(Fleet {
            opts,
            redis,
            hosts,
            nodes,
            indexer,
            indexer_config,
            http,
            token,
            restore_password,
        })
    }

    /// An API client with the admin's token.
    pub fn api(&self) -> Client {
        Client::new(self.http).bearer(self.token.clone())
    }

    /// The dashboard's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.http)
    }

    /// Every process of ours still running; an exited one is an error with its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let mut dead = String::new();
        for d in self
            .hosts
            .iter_mut()
            .map(|h| &mut h.agent)
            .chain(self.nodes.iter_mut().map(|n| &mut n.puller))
            .chain(std::iter::once(&mut self.indexer))
        {
            if d.pid().is_some() && !d.is_running() {
                let _ = writeln!(dead, "--- {} exited:\n{}", d.name(), d.tail());
            }
        }
        if !dead.is_empty() {
            bail!("{dead}");
        }
        Ok(())
    }

    /// Stops every agent, node and the indexer with SIGTERM, in pipeline order, and requires
    /// each to exit 0 in time.
    pub fn shutdown(&mut self) -> anyhow::Result<()> {
        let grace = Duration::from_secs(30);
        let mut problems = String::new();
        let mut stop = |d: &mut Daemon| {
            if d.pid().is_none() {
                return;
            }
            match d.stop(grace) {
                Ok(s) if s.success() => {}
                Ok(s) => {
                    let _ = writeln!(problems, "{} exited with {s}:\n{}", d.name(), d.tail());
                }
                Err(e) => {
                    let _ = writeln!(problems, "{e:#}");
                }
            }
        };
        for h in &mut self.hosts {
            stop(&mut h.agent);
        }
        for n in &mut self.nodes {
            stop(&mut n.puller);
        }
        stop(&mut self.indexer);
        if !problems.is_empty() {
            bail!("unclean shutdown:\n{problems}");
        }
        Ok(())
    }

    /// The last lines of every daemon's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for h in &self.hosts {
            let _ = writeln!(out, "--- {}:\n{}", h.agent.name(), h.agent.tail());
        }
        for n in &self.nodes {
            let _ = writeln!(out, "--- {}:\n{}", n.puller.name(), n.puller.tail());
        }
        let _ = writeln!(out, "--- indexer:\n{}", self.indexer.tail());
        out
    }

    /// The GET of an API path as JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.api().get_json(path)
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// Starts backup node `node-<i>` on `redis`, exporting its root with `restore_password`.
/// `rsync_port` is the daemon port for jobs that name none (UBackup-format jobs).
///
/// Node `i` reports address 127.0.0.`i+1` and its restore export listens there, on
/// `export_port` when given (so that every node's export shares one port, as in a fleet).
pub fn start_node(
    opts: &FleetOptions,
    redis: impl Into<RedisAccess>,
    i: u32,
    restore_password: &str,
    rsync_port: Option<u16>,
    export_port: Option<u16>,
) -> anyhow::Result<Node> {
    let redis: RedisAccess = redis.into();
    let id = format!("node-{i}");
    let ip = Ipv4Addr::new(127, 0, 0, u8::try_from(i + 1).context("node number")?);
    let base = opts.dir.join(&id);
    let root = base.join("root");
    std::fs::create_dir_all(&root)?;
    let config = base.join("ubackup-puller.toml");
    let metrics: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()?).into();
    write(
        &config,
        &format!(
            r#"# {id}: written by ubackup-e2e
[node]
id = "{id}"
ip = "{ip}"
root = "{root}"
workers = 2
interval_secs = 0
reserve_gib = 0
shutdown_grace_secs = 10

[queue]
redis = "{redis}"
lists = ["level1", "uuzuback"]
key_prefix = "ubackup"
heartbeat_secs = 1
lease_secs = 10
idle_poll_ms = 200

[results]
redis = "{redis}"
list = "{results_list}"

[pull]
retry = 3
connect_timeout_secs = 10
stall_timeout_secs = 30
rsync_port = {rsync_port}

[metrics]
listen = "{metrics}"

[log]
level = "info"
{sentinel}"#,
            root = root.display(),
            redis = redis.url,
            rsync_port = rsync_port.unwrap_or(873),
            results_list = opts.results_list,
            metrics = metrics,
            sentinel = redis.section(),
        ),
    )?;
    let mut export = DaemonBuilder::new(RsyncVersion::V3_5_0).address(ip);
    if let Some(p) = export_port {
        export = export.port(p);
    }
    let export = export
        .module(
            Module::new(RESTORE_MODULE, &root)
                .comment("ubackup node root, read-only, for restores")
                .auth(RESTORE_USER, restore_password)
                .read_only(true),
        )
        .start()
        .with_context(|| format!("{id}: restore export"))?;
    let puller = Daemon::spawn(
        &id,
        &bin(opts, "ubackup-puller")?,
        &[
            "run".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        &base.join("puller.log"),
    )?;
    Ok(Node {
        id,
        root,
        config,
        puller,
        export,
        metrics,
    })
}

fn start_host(opts: &FleetOptions, redis: &RedisAccess, i: u32) -> anyhow::Result<Host> {
    let server_id = format!("S100{i}");
    let game_id = 30 + i64::from(i);
    let base = opts.dir.join(format!("host-{i}"));
    let exported = base.join("backup");
    let logs = base.join("log");
    std::fs::create_dir_all(&logs)?;
    let mysql_port = 3305 + i64::from(i);
    let redis_port = 6378 + i64::from(i);
    let instances = vec![
        Instance {
            section: format!("mysql{mysql_port}"),
            back_type: "mysql".into(),
            instance: mysql_port,
            back_dir: exported.join(format!("database_{mysql_port}")),
            chained: true,
        },
        Instance {
            section: format!("redis{redis_port}"),
            back_type: "redis".into(),
            instance: redis_port,
            back_dir: exported.join(format!("redis_{redis_port}")),
            chained: false,
        },
    ];
    for inst in &instances {
        std::fs::create_dir_all(&inst.back_dir)?;
    }
    let scripts_dir = base.join("scripts");
    write_script(
        &scripts_dir.join("mysql_chain.sh"),
        &scripts::mysql_chain(4),
    )?;
    write_script(&scripts_dir.join("redis_full.sh"), &scripts::redis_full())?;

    // Each host has an address of its own, as in a fleet: the node's destination layout
    // (UBackup's `<type>/<a.b.c>/<d>`) is keyed by it.
    let ip = Ipv4Addr::new(127, 0, 0, u8::try_from(10 + i).context("host number")?);
    let rsyncd = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .address(ip)
        .module(Module::new("backup", &exported).comment("database backups"))
        .start()
        .with_context(|| format!("host-{i}: rsync daemon"))?;

    let mut text = format!(
        r#"# host-{i}: written by ubackup-e2e
[agent]
server_id = "{server_id}"
game_id = {game_id}
op_id = 1
ip = "{ip}"
interval_secs = {interval}
jitter_secs = 0
concurrency = 2
timeout_secs = 60
state_dir = "{state}"

[redis]
url = "{redis}"
queue = "uuzuback"
key_prefix = "ubackup"
heartbeat_ttl_secs = {hb_ttl}

[publish]
message = "v1"
checksum = "xxh128"
rsync_port = {port}
self_check = "on"

[log]
level = "info"
"#,
        interval = opts.interval_secs,
        state = base.join("state").display(),
        redis = redis.url,
        hb_ttl = (opts.interval_secs * 2).max(10),
        port = rsyncd.port(),
    );
    for inst in &instances {
        let back_log = logs.join(format!("{}.log", inst.section));
        if inst.chained {
            let full_log = logs.join(format!("{}.full.log", inst.section));
            let _ = write!(
                text,
                r#"
[instances.{section}]
back_type = "mysql"
instance = {instance}
rsync_model = "backup/{model}"
back_dir = "{back_dir}"
back_log = "{back_log}"
last_all_log = "{full_log}"
script = "{script} {back_dir} {back_log} {full_log}"
chain = "incremental"
"#,
                section = inst.section,
                instance = inst.instance,
                model = inst
                    .back_dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy(),
                back_dir = inst.back_dir.display(),
                back_log = back_log.display(),
                full_log = full_log.display(),
                script = scripts_dir.join("mysql_chain.sh").display(),
            );
        } else {
            let _ = write!(
                text,
                r#"
[instances.{section}]
back_type = "redis"
instance = {instance}
rsync_model = "backup/{model}"
back_dir = "{back_dir}"
back_log = "{back_log}"
script = "{script} {back_dir} {back_log}"
"#,
                section = inst.section,
                instance = inst.instance,
                model = inst
                    .back_dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy(),
                back_dir = inst.back_dir.display(),
                back_log = back_log.display(),
                script = scripts_dir.join("redis_full.sh").display(),
            );
        }
    }
    text.push_str(&redis.section());
    let config = base.join("ubackup-agent.toml");
    write(&config, &text)?;
    let agent = Daemon::spawn(
        &format!("agent host-{i}"),
        &bin(opts, "ubackup-agent")?,
        &["run".into(), "-c".into(), config.display().to_string()],
        &base.join("agent.log"),
    )?;
    Ok(Host {
        server_id,
        game_id,
        instances,
        config,
        agent,
        rsyncd,
    })
}

/// Starts the indexer on SQLite with the dashboard, an admin user and a token for it; returns
/// the process, its config, its HTTP address and the token.
pub fn start_indexer(
    opts: &FleetOptions,
    redis: impl Into<RedisAccess>,
    nodes: &[Node],
) -> anyhow::Result<(Daemon, PathBuf, SocketAddr, String)> {
    let redis: RedisAccess = redis.into();
    let base = opts.dir.join("indexer");
    std::fs::create_dir_all(&base)?;
    let port = if opts.http_port == 0 {
        free_port()?
    } else {
        opts.http_port
    };
    let http: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    let node_ids: Vec<String> = nodes.iter().map(|n| format!("{:?}", n.id)).collect();
    let config = base.join("ubackup-indexer.toml");
    write(
        &config,
        &format!(
            r#"# written by ubackup-e2e
[indexer]
id = "indexer-1"

[catalog]
url = "sqlite://{catalog}"

[results]
redis = "{redis}"
list = "{results_list}"
batch = 200
{forward}
[registry]
auto_register = true
default_interval_secs = {interval}

[[clusters]]
name = "local"
redis = "{redis}"
key_prefix = "ubackup"
lists = ["level1", "uuzuback"]
nodes = [{nodes}]

[alerts]
evaluate_secs = 1
grace_secs = {grace}
queue_backlog_secs = 600
node_timeout_secs = 10
agent_timeout_secs = {agent_timeout}

[http]
listen = "{http}"

[log]
level = "info"
{sentinel}"#,
            sentinel = redis.section(),
            catalog = base.join("catalog.sqlite").display(),
            redis = redis.url,
            interval = opts.interval_secs,
            nodes = node_ids.join(", "),
            grace = opts.grace_secs,
            agent_timeout = opts.interval_secs * 2 + opts.grace_secs,
            results_list = opts.results_list,
            forward = opts
                .forward_list
                .as_ref()
                .map(|l| format!("forward_list = {l:?}\n"))
                .unwrap_or_default(),
        ),
    )?;
    let indexer_bin = bin(opts, "ubackup-indexer")?;
    let cfg = config.display().to_string();
    run_checked(&indexer_bin, &["--config", &cfg, "migrate"], None)?;
    run_checked(
        &indexer_bin,
        &["--config", &cfg, "user", "add", "admin", "--role", "admin"],
        Some(&opts.admin_password),
    )?;
    let token = run_checked(
        &indexer_bin,
        &["--config", &cfg, "token", "create", "--user", "admin"],
        None,
    )?
    .trim()
    .to_owned();
    let indexer = Daemon::spawn(
        "indexer",
        &indexer_bin,
        &["--config".into(), cfg.clone(), "run".into()],
        &base.join("indexer.log"),
    )?;
    wait_for("the indexer's HTTP port", Duration::from_secs(30), || {
        Ok(std::net::TcpStream::connect(http).ok().map(|_| ()))
    })?;
    Ok((indexer, config, http, token))
}

/// Runs a command to completion, with `stdin` text, and returns its stdout; a failure is an
/// error with its output.
pub fn run_checked(program: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    if let Some(mut w) = child.stdin.take() {
        if let Some(text) = stdin {
            w.write_all(text.as_bytes())?;
            w.write_all(b"\n")?;
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{} {}: {}\n{}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
