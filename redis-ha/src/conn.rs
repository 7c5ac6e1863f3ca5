//! [`HaConnection`]: a multiplexed connection to the current master, replaced when it fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo as _, Pipeline, RedisFuture,
    RedisResult, Value,
};

use ubackup_backoff::Backoff;

use crate::config::{Durability, SentinelConfig, Target};
use crate::HaError;

/// Timeouts and backoff of an [`HaConnection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Connecting to a Sentinel or to the master.
    pub connect_timeout: Duration,
    /// Waiting for any reply (must exceed the longest blocking command and WAIT).
    pub response_timeout: Duration,
    /// The first wait before a reconnect that follows a failed one.
    pub backoff_min: Duration,
    /// The longest wait between reconnects.
    pub backoff_max: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// What an operator sees of the connection (heartbeat fields, metrics).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// `host:port` of the master last connected to.
    pub master: Option<String>,
    /// Times the master's address changed (failovers followed).
    pub master_changes: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Connections dropped because of an error, a READONLY reply or `+switch-master`.
    pub invalidations: u64,
    /// Writes that fewer replicas than required acknowledged in time.
    pub unconfirmed_writes: u64,
    /// Failed connection attempts in a row (0 when connected).
    pub failing: u64,
}

impl Status {
    /// Appends the connection's state as Prometheus text, each metric named
    /// `<prefix>_redis_…` and labelled with `labels` (`conn="results"`, or empty):
    /// `master_changes_total`, `reconnects_total`, `unconfirmed_writes_total` (counters),
    /// `connect_failures` (failed attempts in a row, 0 when connected) and `master` (1, with
    /// the master's address in label `master`; absent before the first connection).
    /// `# HELP` / `# TYPE` lines are written when `header` is set (once per metric family).
    pub fn render_prometheus(&self, out: &mut String, prefix: &str, labels: &str, header: bool) {
        use std::fmt::Write as _;
        let sep = if labels.is_empty() { "" } else { "," };
        let mut metric = |name: &str, kind: &str, help: &str, extra: &str, value: u64| {
            if header {
                let _ = writeln!(
                    out,
                    "# HELP {prefix}_redis_{name} {help}\n# TYPE {prefix}_redis_{name} {kind}"
                );
            }
            let all = match (labels.is_empty(), extra.is_empty()) {
                (true, true) => String::new(),
                (false, true) => format!("{{{labels}}}"),
                (true, false) => format!("{{{extra}}}"),
                (false, false) => format!("{{{labels}{sep}{extra}}}"),
            };
            let _ = writeln!(out, "{prefix}_redis_{name}{all} {value}");
        };
        metric(
            "master_changes_total",
            "counter",
            "Times the Redis master's address changed (failovers followed).",
            "",
            self.master_changes,
        );
        metric(
            "reconnects_total",
            "counter",
            "Redis connections opened after the first.",
            "",
            self.reconnects,
        );
        metric(
            "unconfirmed_writes_total",
            "counter",
            "Writes that fewer replicas than required acknowledged in time (WAIT).",
            "",
            self.unconfirmed_writes,
        );
        metric(
            "connect_failures",
            "gauge",
            "Failed attempts in a row to reach the Redis master (0 when connected).",
            "",
            self.failing,
        );
        if let Some(m) = &self.master {
            // The address comes from a Sentinel: keep the label value well-formed.
            let m: String = m
                .chars()
                .map(|c| {
                    if matches!(c, '\\' | '"' | '\n') {
                        '_'
                    } else {
                        c
                    }
                })
                .collect();
            metric(
                "master",
                "gauge",
                "1, labelled with the address of the Redis master connected to last.",
                &format!("master=\"{m}\""),
                1,
            );
        }
    }
}

#[derive(Debug, Default)]
struct State {
    current: Option<(MultiplexedConnection, u64)>,
    generation: u64,
    master: Option<(String, u16)>,
    /// From `+switch-master`: tried before asking the Sentinels.
    hint: Option<(String, u16)>,
    failing: u32,
    next_try: Option<Instant>,
}

#[derive(Debug, Default)]
struct Counters {
    master_changes: AtomicU64,
    reconnects: AtomicU64,
    invalidations: AtomicU64,
    unconfirmed: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) target: Target,
    opts: Options,
    db: i64,
    state: Mutex<State>,
    connecting: tokio::sync::Mutex<()>,
    counters: Counters,
}

/// A Redis connection that follows the master.
///
/// It implements redis-rs's [`ConnectionLike`], so commands, pipelines and scripts run on
/// it as on a `ConnectionManager`. Every clone shares one multiplexed connection. When a
/// command fails with an I/O error, a timeout, or a `READONLY` reply (the server was demoted
/// to a replica), the connection is dropped, the error is returned (the caller decides
/// whether to repeat: a write may have happened), and the next command finds the master
/// again, through the Sentinels in Sentinel mode. Reconnects after a failed one wait with
/// bounded exponential backoff.
#[derive(Debug, Clone)]
pub struct HaConnection {
    pub(crate) shared: Arc<Shared>,
}

/// The one connection of an [`HaConnection`] at one moment, for a write and the `WAIT`
/// that must follow it on the same socket (WAIT counts the replication offset of its own
/// client).
#[derive(Debug)]
pub struct Pinned {
    conn: MultiplexedConnection,
    generation: u64,
    shared: Arc<Shared>,
}

/// Whether an error means this connection is no longer to the master.
pub fn is_master_lost(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code() == Some("READONLY")
        || e.code() == Some("MASTERDOWN")
        || e.to_string().contains("READONLY")
}

impl HaConnection {
    /// Connects (in Sentinel mode: asks the Sentinels for the master and checks its role)
    /// and, in Sentinel mode, starts following `+switch-master`. Fails when no master is
    /// reachable now.
    pub async fn connect(target: Target, opts: Options) -> Result<HaConnection, HaError> {
        let db = match &target {
            Target::Direct(url) | Target::Sentinel { url, .. } => url
                .as_str()
                .into_connection_info()
                .map_err(HaError::Redis)?
                .redis_settings()
                .db(),
        };
        let sentinel = matches!(target, Target::Sentinel { .. });
        let ha = HaConnection {
            shared: Arc::new(Shared {
                target,
                opts,
                db,
                state: Mutex::new(State::default()),
                connecting: tokio::sync::Mutex::new(()),
                counters: Counters::default(),
            }),
        };
        ha.shared.current().await?;
        if sentinel {
            crate::watch::spawn(Arc::downgrade(&ha.shared));
        }
        Ok(ha)
    }

    /// The connection to use for a write followed by [`Pinned::confirm`].
    pub async fn pinned(&self) -> Result<Pinned, HaError> {
        let (conn, generation) = self.shared.current().await?;
        Ok(Pinned {
            conn,
            generation,
            shared: self.shared.clone(),
        })
    }

    /// What an operator sees.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// `(name, value)` pairs for a heartbeat hash: `redis_master`, `redis_master_changes`,
    /// `redis_reconnects`, `redis_unconfirmed_writes`.
    pub fn heartbeat_fields(&self) -> Vec<(String, String)> {
        let s = self.status();
        vec![
            ("redis_master".into(), s.master.unwrap_or_default()),
            ("redis_master_changes".into(), s.master_changes.to_string()),
            ("redis_reconnects".into(), s.reconnects.to_string()),
            (
                "redis_unconfirmed_writes".into(),
                s.unconfirmed_writes.to_string(),
            ),
        ]
    }
}

impl Pinned {
    /// `WAIT replicas timeout` on this connection: Ok when enough replicas acknowledged
    /// every write sent on it so far, [`HaError::Unconfirmed`] otherwise.
    pub async fn confirm(&mut self, d: Durability) -> Result<(), HaError> {
        if !d.enabled() {
            return Ok(());
        }
        let got: RedisResult<i64> = redis::cmd("WAIT")
            .arg(d.replicas)
            .arg(
                u64::try_from(d.timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .query_async(self)
            .await;
        let got = got.map_err(HaError::Redis)?;
        if got < i64::from(d.replicas) {
            self.shared
                .counters
                .unconfirmed
                .fetch_add(1, Ordering::Relaxed);
            return Err(HaError::Unconfirmed {
                wanted: d.replicas,
                got: got.max(0) as u64,
            });
        }
        Ok(())
    }
}

impl ConnectionLike for Pinned {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.conn.req_packed_command(cmd).await;
            self.shared.check(&r, self.generation);
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.shared.check(&r, self.generation);
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}

impl ConnectionLike for HaConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (mut conn, generation) =
                self.shared.current().await.map_err(HaError::into_redis)?;
            let r = conn.req_packed_command(cmd).await;
            self.shared.check(&r, generation);
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (mut conn, generation) =
                self.shared.current().await.map_err(HaError::into_redis)?;
            let r = conn.req_packed_commands(pipeline, offset, count).await;
            self.shared.check(&r, generation);
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}

impl Shared {
    fn status(&self) -> Status {
        let (master, failing) = match self.state.lock() {
            Ok(s) => (
                s.master.as_ref().map(|(h, p)| format!("{h}:{p}")),
                u64::from(s.failing),
            ),
            Err(_) => (None, 0),
        };
        Status {
            master,
            master_changes: self.counters.master_changes.load(Ordering::Relaxed),
            reconnects: self.counters.reconnects.load(Ordering::Relaxed),
            invalidations: self.counters.invalidations.load(Ordering::Relaxed),
            unconfirmed_writes: self.counters.unconfirmed.load(Ordering::Relaxed),
            failing,
        }
    }

    fn check<T>(&self, r: &RedisResult<T>, generation: u64) {
        if let Err(e) = r {
            if is_master_lost(e) {
                self.invalidate(generation, &e.to_string(), None);
            }
        }
    }

    /// Drops connection `generation` if it is still the current one (so that one failure
    /// seen by many tasks reconnects once), remembering `hint` as the next master to try.
    pub(crate) fn invalidate(&self, generation: u64, why: &str, hint: Option<(String, u16)>) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if hint.is_some() {
            s.hint = hint;
        }
        if s.current.as_ref().is_some_and(|(_, g)| *g == generation) {
            s.current = None;
            self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                master = ?s.master.as_ref().map(|(h, p)| format!("{h}:{p}")),
                "redis connection dropped ({why}); finding the master again"
            );
        }
    }

    /// The generation of the current connection, if any.
    pub(crate) fn generation(&self) -> Option<u64> {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.current.as_ref().map(|(_, g)| *g))
    }

    /// The current master's address, if any.
    pub(crate) fn master(&self) -> Option<(String, u16)> {
        self.state.lock().ok().and_then(|s| s.master.clone())
    }

    fn cached(&self) -> Option<(MultiplexedConnection, u64)> {
        self.state.lock().ok().and_then(|s| s.current.clone())
    }

    async fn current(&self) -> Result<(MultiplexedConnection, u64), HaError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let wait = self
            .state
            .lock()
            .ok()
            .and_then(|s| s.next_try)
            .and_then(|t| t.checked_duration_since(Instant::now()));
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
        match self.open().await {
            Ok((conn, addr)) => {
                let mut s = self.state.lock().map_err(|_| HaError::Poisoned)?;
                s.generation += 1;
                let generation = s.generation;
                if generation > 1 {
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                if s.master.as_ref().is_some_and(|m| *m != addr) {
                    self.counters.master_changes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        from = ?s.master.as_ref().map(|(h, p)| format!("{h}:{p}")),
                        to = %format!("{}:{}", addr.0, addr.1),
                        "redis master changed (failover followed)"
                    );
                } else if generation > 1 {
                    tracing::info!(master = %format!("{}:{}", addr.0, addr.1), "redis reconnected");
                }
                s.master = Some(addr);
                s.hint = None;
                s.failing = 0;
                s.next_try = None;
                s.current = Some((conn.clone(), generation));
                Ok((conn, generation))
            }
            Err(e) => {
                if let Ok(mut s) = self.state.lock() {
                    s.failing = s.failing.saturating_add(1);
                    let delay = Backoff::new(self.opts.backoff_min, self.opts.backoff_max)
                        .delay_for(s.failing);
                    s.next_try = Some(Instant::now() + delay);
                    tracing::warn!(failing = s.failing, next_in = ?delay, "no redis master: {e}");
                }
                Err(e)
            }
        }
    }

    fn async_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.opts.connect_timeout))
            .set_response_timeout(Some(self.opts.response_timeout))
    }

    async fn open(&self) -> Result<(MultiplexedConnection, (String, u16)), HaError> {
        match &self.target {
            Target::Direct(url) => {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(HaError::Redis)?;
                let addr = match info.addr() {
                    ConnectionAddr::Tcp(h, p)
                    | ConnectionAddr::TcpTls {
                        host: h, port: p, ..
                    } => (h.clone(), *p),
                    other => (other.to_string(), 0),
                };
                let client = redis::Client::open(info).map_err(HaError::Redis)?;
                let conn = client
                    .get_multiplexed_async_connection_with_config(&self.async_config())
                    .await
                    .map_err(HaError::Redis)?;
                Ok((conn, addr))
            }
            Target::Sentinel { sentinel, url } => self.open_sentinel(sentinel, url).await,
        }
    }

    async fn open_sentinel(
        &self,
        cfg: &SentinelConfig,
        url: &str,
    ) -> Result<(MultiplexedConnection, (String, u16)), HaError> {
        let hint = self.state.lock().ok().and_then(|s| s.hint.clone());
        let mut candidates: Vec<(String, u16)> = hint.into_iter().collect();
        let mut asked = Vec::new();
        for (host, port) in &cfg.sentinels {
            match self.ask_sentinel(cfg, host, *port).await {
                Ok(Some(m)) => {
                    if !candidates.contains(&m) {
                        candidates.push(m);
                    }
                    break;
                }
                Ok(None) => asked.push(format!("{host}:{port}: does not know the master")),
                Err(e) => asked.push(format!("{host}:{port}: {e}")),
            }
        }
        let base = url.into_connection_info().map_err(HaError::Redis)?;
        let mut settings = base.redis_settings().clone();
        if let Some(p) = &cfg.redis_password {
            settings = settings.set_password(&p.0);
        }
        for (host, port) in candidates {
            let info = ConnectionAddr::Tcp(host.clone(), port)
                .into_connection_info()
                .map_err(HaError::Redis)?
                .set_redis_settings(settings.clone());
            let conn = async {
                let client = redis::Client::open(info)?;
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&self.async_config())
                    .await?;
                // A Sentinel's answer can be stale: only a server that says it is the
                // master is used (redis-rs's SentinelClient checks the same).
                let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
                let is_master = matches!(role.first(), Some(Value::BulkString(b)) if b == b"master")
                    || matches!(role.first(), Some(Value::SimpleString(s)) if s == "master");
                Ok::<_, redis::RedisError>(is_master.then_some(conn))
            }
            .await;
            match conn {
                Ok(Some(conn)) => return Ok((conn, (host, port))),
                Ok(None) => asked.push(format!("{host}:{port}: not a master")),
                Err(e) => asked.push(format!("{host}:{port}: {e}")),
            }
        }
        Err(HaError::NoMaster {
            name: cfg.master_name.clone(),
            tried: asked.join("; "),
        })
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` on one Sentinel.
    async fn ask_sentinel(
        &self,
        cfg: &SentinelConfig,
        host: &str,
        port: u16,
    ) -> RedisResult<Option<(String, u16)>> {
        let mut conn = crate::watch::sentinel_client(cfg, host, port)?
            .get_multiplexed_async_connection_with_config(&self.async_config())
            .await?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&cfg.master_name)
            .query_async(&mut conn)
            .await?;
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn renders_counters_and_the_master_as_a_label() {
        let s = Status {
            master: Some("127.0.0.1:6380".into()),
            master_changes: 2,
            reconnects: 3,
            invalidations: 3,
            unconfirmed_writes: 1,
            failing: 0,
        };
        let mut out = String::new();
        s.render_prometheus(&mut out, "ubackup_indexer", "conn=\"results\"", true);
        assert!(out.contains("# TYPE ubackup_indexer_redis_master_changes_total counter\n"));
        assert!(out.contains("ubackup_indexer_redis_master_changes_total{conn=\"results\"} 2\n"));
        assert!(out.contains("ubackup_indexer_redis_reconnects_total{conn=\"results\"} 3\n"));
        assert!(out.contains(
            "ubackup_indexer_redis_master{conn=\"results\",master=\"127.0.0.1:6380\"} 1\n"
        ));
        let mut bare = String::new();
        Status {
            master: Some("a\"b".into()),
            ..Status::default()
        }
        .render_prometheus(&mut bare, "ubackup", "", false);
        assert!(!bare.contains("# HELP"));
        assert!(
            bare.contains("ubackup_redis_master{master=\"a_b\"} 1\n"),
            "{bare}"
        );
        assert!(
            bare.contains("ubackup_redis_connect_failures 0\n"),
            "{bare}"
        );
    }
}
