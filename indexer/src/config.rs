//! The TOML config: raw (serde, strings) → [`Config`] (validated, every problem reported at
//! once, secrets redacted in `Debug`). The annotated example is `indexer/indexer.example.toml`.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// A validated config.
#[derive(Clone)]
pub struct Config {
    /// This indexer's id: names its processing list.
    pub id: String,
    /// The catalog URL (`sqlite://PATH` or `postgres://...`).
    pub catalog_url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Backups older than this are pruned (days; 0 = never).
    pub retention_days: u64,
    /// How often to prune (s).
    pub prune_interval_secs: u64,
    /// Where results arrive.
    pub results: ResultsConfig,
    /// Registry behaviour.
    pub registry: RegistryConfig,
    /// Backup clusters to watch.
    pub clusters: Vec<ClusterConfig>,
    /// Alert thresholds.
    pub alerts: AlertsConfig,
    /// Alert channels and routes (`[[webhooks]]` are channels of kind `webhook`).
    pub delivery: DeliveryConfig,
    /// HTTP API.
    pub http: HttpConfig,
    /// Logins: limits, the hashing pool, token lifetimes (`[login]`).
    pub login: crate::auth::LoginPolicy,
    /// Log filter (tracing EnvFilter syntax).
    pub log_level: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("id", &self.id)
            .field("catalog_url", &redact_url(&self.catalog_url))
            .field("max_connections", &self.max_connections)
            .field("retention_days", &self.retention_days)
            .field("results", &self.results)
            .field("registry", &self.registry)
            .field("clusters", &self.clusters)
            .field("alerts", &self.alerts)
            .field("delivery", &self.delivery)
            .field("http", &self.http)
            .field("login", &self.login)
            .finish()
    }
}

/// A URL with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((cred, host)) = rest.split_once('@') {
            if let Some((user, _)) = cred.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

/// Results intake.
#[derive(Debug, Clone)]
pub struct ResultsConfig {
    /// The Redis holding the results list.
    pub redis: String,
    /// UBackup's `message` list.
    pub list: String,
    /// This indexer's processing list.
    pub processing_list: String,
    /// Where invalid results go, with their reason.
    pub dead_letter: String,
    /// During a migration: a list that gets a byte-for-byte copy of every pull result this
    /// indexer consumed and `to_es.py` can read (LPUSHed, oldest first, in the same Redis
    /// script that drops it from the processing list), for UBackup's `to_es.py`, which reads
    /// `message` and cannot share it. Node events and invalid messages are not forwarded (see
    /// `ingest::forwardable`).
    pub forward_list: Option<String>,
    /// Results per catalog transaction.
    pub batch: usize,
    /// Largest result accepted (bytes).
    pub max_message_bytes: usize,
    /// `[redis_sentinel]`: the results' Redis found through Sentinel (and the clusters'
    /// whose `redis` is the same URL).
    pub ha: ubackup_redis_ha::HaSettings,
}

/// Registry behaviour.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Register unknown instances on first sight instead of alerting `illegal`.
    pub auto_register: bool,
    /// The period assumed when neither the registry nor results give one (s).
    pub default_interval_secs: i64,
}

/// One backup cluster: its Redis and what to read there.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Its name.
    pub name: String,
    /// Its Redis (job lists, heartbeats).
    pub redis: String,
    /// The nodes' `queue.key_prefix`.
    pub key_prefix: String,
    /// Job lists, highest priority first.
    pub lists: Vec<String>,
    /// Nodes that must be up (others are watched once seen).
    pub nodes: Vec<String>,
}

/// Alert thresholds.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// How often rules run (s).
    pub evaluate_secs: u64,
    /// Slack after the interval before `overdue` (s; UBackup's TTL was interval + 3000).
    pub grace_secs: i64,
    /// `queue_backlog` when the oldest queued job is older than this (s).
    pub queue_backlog_secs: i64,
    /// `node_down` when a node's heartbeat is older than this (s).
    pub node_timeout_secs: i64,
    /// `agent_down` when an agent's heartbeat is older than this (s).
    pub agent_timeout_secs: i64,
    /// How long an illegal message keeps its alert open (s).
    pub illegal_window_secs: i64,
}

/// Where alert messages go (`[delivery]`, `[[channels]]`, `[[routes]]`; docs/alerts.md).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The dashboard's base URL, for links in messages (e.g. `https://ubackup.example.com`).
    pub dashboard_url: String,
    /// How often the outbox is worked (ms).
    pub tick_ms: u64,
    /// Channels, by unique name.
    pub channels: Vec<ChannelConfig>,
    /// Routes; none: every channel gets every alert.
    pub routes: Vec<RouteConfig>,
}

/// A channel's kind: the receiver's body format and signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Generic JSON (`{"event","alert",...}` + `X-Ubackup-Signature` HMAC-SHA256).
    Webhook,
    /// Slack incoming webhook (also Mattermost, Rocket.Chat): `{"text"}`.
    Slack,
    /// DingTalk robot (markdown; `timestamp` + `sign` when a secret is set).
    Dingtalk,
    /// WeCom (WeChat Work) group robot (markdown).
    Wecom,
    /// Feishu / Lark custom bot (text; `timestamp` + `sign` when a secret is set).
    Feishu,
    /// Prometheus Alertmanager (`POST {url}/api/v2/alerts`).
    Alertmanager,
    /// SMTP mail (lettre).
    Mail,
}

/// What alerts are grouped by within a channel (the event, open or resolve, always is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The rule.
    Rule,
    /// The business (game id).
    Business,
    /// The DB host (server id).
    Host,
    /// The backup node (node alerts).
    Node,
    /// The alert's subject: one message per alert.
    Subject,
}

/// How mail reaches the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTls {
    /// Plain connect, then STARTTLS (required).
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No TLS (loopback relays only).
    None,
}

/// SMTP settings of a `mail` channel.
#[derive(Clone)]
pub struct MailConfig {
    /// Server host name (also the name its certificate must carry).
    pub host: String,
    /// Port (587 for STARTTLS, 465 for TLS).
    pub port: u16,
    /// TLS mode.
    pub tls: MailTls,
    /// Login, if the server wants one.
    pub username: Option<String>,
    /// Its password.
    pub password: String,
    /// `From:`.
    pub from: String,
    /// `To:`.
    pub to: Vec<String>,
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &"***")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish()
    }
}

/// One channel.
#[derive(Clone)]
pub struct ChannelConfig {
    /// Unique name (routes name it; the outbox keys on it).
    pub name: String,
    /// Body format and signature.
    pub kind: ChannelKind,
    /// `https://...` (or `http://`); the Alertmanager base URL; empty for mail.
    pub url: String,
    /// Signing secret (webhook HMAC, DingTalk, Feishu); empty: unsigned.
    pub secret: String,
    /// Extra CA certificates (PEM) trusted for this channel, besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// Per attempt (s).
    pub timeout_secs: u64,
    /// Attempts before a message is recorded as failed.
    pub max_attempts: u32,
    /// First retry delay (ms), doubled each time (at most 5 min).
    pub backoff_ms: u64,
    /// Largest response body read (bytes).
    pub max_response_bytes: usize,
    /// Grouping.
    pub group_by: Vec<GroupBy>,
    /// A new group waits this long for more alerts before its first message (s).
    pub group_wait_secs: u64,
    /// A group with new alerts gets at most one message per this interval (s).
    pub group_interval_secs: u64,
    /// At most this many messages per `rate_window_secs`; the rest become one summary.
    pub rate_limit: u32,
    /// The rate limit's window (s).
    pub rate_window_secs: u64,
    /// Alerts carried in full in one message (webhook, Alertmanager); the count is exact.
    pub max_alerts: usize,
    /// SMTP (kind `mail`).
    pub mail: Option<MailConfig>,
}

impl std::fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &redact_query(&self.url))
            .field("secret", &"***")
            .field("ca_file", &self.ca_file)
            .field("group_by", &self.group_by)
            .field("rate_limit", &self.rate_limit)
            .field("mail", &self.mail)
            .finish_non_exhaustive()
    }
}

/// A URL without its query (robot keys and tokens live there).
pub fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?***"),
        None => url.to_string(),
    }
}

/// A route: alerts that match every non-empty filter go to its channels.
#[derive(Debug, Clone, Default)]
pub struct RouteConfig {
    /// Channel names.
    pub channels: Vec<String>,
    /// Rules (empty: any).
    pub rules: Vec<String>,
    /// Businesses (empty: any).
    pub businesses: Vec<i64>,
    /// Severities, `critical` or `warning` (empty: any).
    pub severities: Vec<String>,
}

/// The HTTP API.
#[derive(Clone)]
pub struct HttpConfig {
    /// Listen address (none: no HTTP).
    pub listen: Option<SocketAddr>,
    /// Let UBackup's legacy GET routes answer with neither a token nor a dashboard session.
    pub anonymous_legacy_reads: bool,
    /// Mark the web session cookie `Secure` (default true; false only for plain-HTTP tests).
    pub secure_cookies: bool,
    /// Serve HTTPS on `listen` with these files (reloaded on SIGHUP).
    pub tls: Option<crate::http::tls::TlsFiles>,
    /// Plain HTTP on a non-loopback address is allowed because a TLS proxy is in front.
    pub behind_tls_proxy: bool,
    /// When non-empty, requests whose `Host` names anything else get 421 (DNS rebinding).
    /// Lower-case host names, without ports.
    pub allowed_hosts: Vec<String>,
    /// Serve `/metrics` only here (plain HTTP), not on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// When set, `/metrics` on `listen` requires `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("anonymous_legacy_reads", &self.anonymous_legacy_reads)
            .field("secure_cookies", &self.secure_cookies)
            .field("tls", &self.tls)
            .field("behind_tls_proxy", &self.behind_tls_proxy)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("metrics_listen", &self.metrics_listen)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    indexer: RawIndexer,
    #[serde(default)]
    catalog: RawCatalog,
    #[serde(default)]
    results: RawResults,
    #[serde(default)]
    registry: RawRegistry,
    #[serde(default)]
    clusters: Vec<RawCluster>,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    channels: Vec<RawChannel>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    login: RawLogin,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    redis_sentinel: RawSentinel,
}

/// `[redis_sentinel]`, read by [`ubackup_redis_ha::HaSettings::build`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSentinel {
    master_name: Option<String>,
    sentinels: Option<RawSentinelList>,
    sentinel_password: Option<String>,
    redis_password: Option<String>,
    wait_replicas: Option<u32>,
    wait_timeout_ms: Option<u64>,
}

/// A list, or one comma-separated string.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSentinelList {
    List(Vec<String>),
    One(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIndexer {
    id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    url: Option<String>,
    max_connections: Option<u32>,
    retention_days: Option<u64>,
    prune_interval_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResults {
    redis: Option<String>,
    list: Option<String>,
    processing_list: Option<String>,
    dead_letter: Option<String>,
    forward_list: Option<String>,
    batch: Option<usize>,
    max_message_bytes: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    auto_register: Option<bool>,
    default_interval_secs: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    redis: String,
    key_prefix: Option<String>,
    lists: Option<Vec<String>>,
    #[serde(default)]
    nodes: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    evaluate_secs: Option<u64>,
    grace_secs: Option<i64>,
    queue_backlog_secs: Option<i64>,
    node_timeout_secs: Option<i64>,
    agent_timeout_secs: Option<i64>,
    illegal_window_secs: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret: String,
    timeout_secs: Option<u64>,
    max_attempts: Option<u32>,
    backoff_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    dashboard_url: Option<String>,
    tick_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    name: String,
    kind: ChannelKind,
    #[serde(default)]
    url: String,
    #[serde(default)]
    secret: String,
    ca_file: Option<std::path::PathBuf>,
    timeout_secs: Option<u64>,
    max_attempts: Option<u32>,
    backoff_ms: Option<u64>,
    max_response_bytes: Option<usize>,
    group_by: Option<Vec<GroupBy>>,
    group_wait_secs: Option<u64>,
    group_interval_secs: Option<u64>,
    rate_limit: Option<u32>,
    rate_window_secs: Option<u64>,
    max_alerts: Option<usize>,
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    smtp_tls: Option<MailTls>,
    username: Option<String>,
    #[serde(default)]
    password: String,
    from: Option<String>,
    #[serde(default)]
    to: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    channels: Vec<String>,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    businesses: Vec<i64>,
    #[serde(default)]
    severities: Vec<String>,
}

impl RawChannel {
    /// The channel, or what is wrong with it (pushed onto `bad`).
    fn check(self, field: &str, bad: &mut Vec<String>) -> ChannelConfig {
        let http = self.kind != ChannelKind::Mail;
        if http && !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            bad.push(format!(
                "{field}.url: {:?} must be https:// (or http://)",
                redact_query(&self.url)
            ));
        }
        if self.kind == ChannelKind::Webhook && self.secret.len() < 16 {
            bad.push(format!("{field}.secret: must be at least 16 characters"));
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                bad.push(format!("{field}.ca_file: {} is not a file", ca.display()));
            }
        }
        let mail = if self.kind == ChannelKind::Mail {
            let host = self.smtp_host.unwrap_or_default();
            if host.is_empty() {
                bad.push(format!("{field}.smtp_host: required for kind = \"mail\""));
            }
            let from = self.from.unwrap_or_default();
            if from.parse::<lettre::message::Mailbox>().is_err() {
                bad.push(format!("{field}.from: {from:?} is not a mail address"));
            }
            if self.to.is_empty() {
                bad.push(format!("{field}.to: name at least one recipient"));
            }
            for t in &self.to {
                if t.parse::<lettre::message::Mailbox>().is_err() {
                    bad.push(format!("{field}.to: {t:?} is not a mail address"));
                }
            }
            let tls = self.smtp_tls.unwrap_or(MailTls::Starttls);
            Some(MailConfig {
                host,
                port: self.smtp_port.unwrap_or(match tls {
                    MailTls::Tls => 465,
                    _ => 587,
                }),
                tls,
                username: self.username.filter(|u| !u.is_empty()),
                password: self.password,
                from,
                to: self.to,
            })
        } else {
            None
        };
        let rate_limit = self.rate_limit.unwrap_or(10);
        if rate_limit == 0 {
            bad.push(format!("{field}.rate_limit: must be at least 1"));
        }
        ChannelConfig {
            name: self.name,
            kind: self.kind,
            url: self.url,
            secret: self.secret,
            ca_file: self.ca_file,
            timeout_secs: self.timeout_secs.unwrap_or(10).max(1),
            max_attempts: self.max_attempts.unwrap_or(20).max(1),
            backoff_ms: self.backoff_ms.unwrap_or(1000).max(1),
            max_response_bytes: self.max_response_bytes.unwrap_or(64 * 1024),
            group_by: self
                .group_by
                .unwrap_or_else(|| vec![GroupBy::Rule, GroupBy::Business]),
            group_wait_secs: self.group_wait_secs.unwrap_or(30),
            group_interval_secs: self.group_interval_secs.unwrap_or(300),
            rate_limit,
            rate_window_secs: self.rate_window_secs.unwrap_or(300).max(1),
            max_alerts: self.max_alerts.unwrap_or(1000).max(1),
            mail,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    anonymous_legacy_reads: Option<bool>,
    secure_cookies: Option<bool>,
    tls_cert: Option<std::path::PathBuf>,
    tls_key: Option<std::path::PathBuf>,
    behind_tls_proxy: Option<bool>,
    allowed_hosts: Option<Vec<String>>,
    metrics_listen: Option<String>,
    metrics_token: Option<String>,
}

impl RawHttp {
    /// The `[http]` section, or what is wrong with it (pushed onto `bad`).
    fn check(self, bad: &mut Vec<String>) -> HttpConfig {
        let addr = |field: &str, v: Option<String>, bad: &mut Vec<String>| match v {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    bad.push(format!("{field}: {s:?} is not ADDRESS:PORT"));
                    None
                }
            },
        };
        let listen = addr("http.listen", self.listen, bad);
        let metrics_listen = addr("http.metrics_listen", self.metrics_listen, bad);
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::http::tls::TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                bad.push("http.tls_cert and http.tls_key go together: set both or neither".into());
                None
            }
        };
        let secure_cookies = self.secure_cookies.unwrap_or(true);
        let behind_tls_proxy = self.behind_tls_proxy.unwrap_or(false);
        if let Some(a) = listen {
            if tls.is_none() && secure_cookies && !behind_tls_proxy && !a.ip().is_loopback() {
                bad.push(format!(
                    "http.listen: {a} is not a loopback address and serves plain HTTP, but the \
                     dashboard's session cookie is Secure: browsers would drop it and every \
                     login would fail. Either serve HTTPS here (set http.tls_cert and \
                     http.tls_key), or put a TLS proxy in front and say so with \
                     http.behind_tls_proxy = true"
                ));
            }
        }
        let mut allowed_hosts = Vec::new();
        for h in self.allowed_hosts.unwrap_or_default() {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.contains(['/', ' ', '@']) {
                bad.push(format!("http.allowed_hosts: {h:?} is not a host name"));
            } else {
                allowed_hosts.push(h);
            }
        }
        let metrics_token = self.metrics_token.filter(|t| !t.is_empty());
        if metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
            bad.push("http.metrics_token: must be at least 16 characters".into());
        }
        HttpConfig {
            listen,
            anonymous_legacy_reads: self.anonymous_legacy_reads.unwrap_or(false),
            secure_cookies,
            tls,
            behind_tls_proxy,
            allowed_hosts,
            metrics_listen,
            metrics_token,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLogin {
    attempts: Option<u32>,
    base_delay_ms: Option<u64>,
    max_delay_secs: Option<u64>,
    address_failures: Option<u32>,
    address_window_secs: Option<u64>,
    hash_workers: Option<usize>,
    hash_queue_ms: Option<u64>,
    hash_queue_len: Option<usize>,
    token_default_secs: Option<u64>,
    token_max_secs: Option<u64>,
    login_token_secs: Option<u64>,
}

impl RawLogin {
    /// The policy, or what is wrong with it (pushed onto `bad`).
    fn check(self, bad: &mut Vec<String>) -> crate::auth::LoginPolicy {
        let d = crate::auth::LoginPolicy::default();
        let ms = |secs: Option<u64>, default_ms: i64| {
            secs.map_or(default_ms, |s| {
                i64::try_from(s)
                    .unwrap_or(i64::MAX / 1000)
                    .min(i64::MAX / 1000)
                    * 1000
            })
        };
        let p = crate::auth::LoginPolicy {
            limits: crate::auth::limiter::LimitPolicy {
                attempts: self.attempts.unwrap_or(d.limits.attempts),
                base_delay_ms: self.base_delay_ms.map_or(d.limits.base_delay_ms, |v| {
                    i64::try_from(v).unwrap_or(i64::MAX)
                }),
                max_delay_ms: ms(self.max_delay_secs, d.limits.max_delay_ms),
                address_failures: self.address_failures.unwrap_or(d.limits.address_failures),
                address_window_ms: ms(self.address_window_secs, d.limits.address_window_ms),
                max_entries: d.limits.max_entries,
            },
            hash_workers: self.hash_workers.unwrap_or(d.hash_workers),
            hash_queue_ms: self.hash_queue_ms.unwrap_or(d.hash_queue_ms),
            hash_queue_len: self.hash_queue_len.unwrap_or(d.hash_queue_len),
            token_default_ms: ms(self.token_default_secs, d.token_default_ms),
            token_max_ms: ms(self.token_max_secs, d.token_max_ms),
            login_token_ms: ms(self.login_token_secs, d.login_token_ms),
        };
        if p.limits.attempts == 0 || p.limits.address_failures == 0 {
            bad.push("login.attempts and login.address_failures must be at least 1".into());
        }
        if p.limits.base_delay_ms <= 0 || p.limits.max_delay_ms < p.limits.base_delay_ms {
            bad.push(
                "login.base_delay_ms must be positive and at most login.max_delay_secs".into(),
            );
        }
        if p.limits.address_window_ms <= 0 {
            bad.push("login.address_window_secs must be positive".into());
        }
        if p.token_default_ms < 1000 || p.token_max_ms < p.token_default_ms {
            bad.push(
                "login.token_default_secs must be at least 1 and at most login.token_max_secs"
                    .into(),
            );
        }
        if p.login_token_ms < 1000 || p.login_token_ms > p.token_max_ms {
            bad.push(
                "login.login_token_secs must be at least 1 and at most login.token_max_secs".into(),
            );
        }
        p
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
}

/// Every problem found in a config file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
        Config::parse(&text)
    }

    /// Validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError(vec![e.to_string()]))?;
        let mut bad = Vec::new();
        let id = raw.indexer.id.unwrap_or_else(|| "indexer".into());
        if id.is_empty() || id.contains(char::is_whitespace) {
            bad.push(format!(
                "indexer.id: {id:?} must be non-empty without spaces"
            ));
        }
        let catalog_url = raw
            .catalog
            .url
            .unwrap_or_else(|| "sqlite:///var/lib/ubackup/catalog.db".into());
        if crate::catalog::Engine::of_url(&catalog_url).is_none() {
            bad.push(format!(
                "catalog.url: {:?} is neither sqlite:// nor postgres://",
                redact_url(&catalog_url)
            ));
        }
        let redis_ok = |field: &str, url: &str, bad: &mut Vec<String>| {
            if !(url.starts_with("redis://") || url.starts_with("unix://")) {
                bad.push(format!("{field}: {url:?} is not a redis:// URL"));
            }
        };
        let results_redis = raw
            .results
            .redis
            .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
        redis_ok("results.redis", &results_redis, &mut bad);
        let batch = raw.results.batch.unwrap_or(500);
        if !(1..=10_000).contains(&batch) {
            bad.push(format!("results.batch: {batch} is outside 1..=10000"));
        }
        let max_message_bytes = raw
            .results
            .max_message_bytes
            .unwrap_or(ubackup_messages::MAX_MESSAGE_BYTES);
        if max_message_bytes < 256 {
            bad.push(format!(
                "results.max_message_bytes: {max_message_bytes} is under 256"
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut clusters = Vec::new();
        for (i, c) in raw.clusters.into_iter().enumerate() {
            redis_ok(&format!("clusters[{i}].redis"), &c.redis, &mut bad);
            if !names.insert(c.name.clone()) {
                bad.push(format!("clusters[{i}].name: {:?} appears twice", c.name));
            }
            clusters.push(ClusterConfig {
                name: c.name,
                redis: c.redis,
                key_prefix: c.key_prefix.unwrap_or_else(|| "ubackup".into()),
                lists: c
                    .lists
                    .unwrap_or_else(|| vec!["level1".into(), "uuzuback".into()]),
                nodes: c.nodes,
            });
        }
        let a = raw.alerts;
        let alerts = AlertsConfig {
            evaluate_secs: a.evaluate_secs.unwrap_or(60).max(1),
            grace_secs: a.grace_secs.unwrap_or(3000),
            queue_backlog_secs: a.queue_backlog_secs.unwrap_or(3600),
            node_timeout_secs: a.node_timeout_secs.unwrap_or(120),
            agent_timeout_secs: a.agent_timeout_secs.unwrap_or(900),
            illegal_window_secs: a.illegal_window_secs.unwrap_or(86_400),
        };
        for (k, v) in [
            ("alerts.grace_secs", alerts.grace_secs),
            ("alerts.queue_backlog_secs", alerts.queue_backlog_secs),
            ("alerts.node_timeout_secs", alerts.node_timeout_secs),
            ("alerts.agent_timeout_secs", alerts.agent_timeout_secs),
            ("alerts.illegal_window_secs", alerts.illegal_window_secs),
        ] {
            if v < 0 {
                bad.push(format!("{k}: {v} is negative"));
            }
        }
        // `[[webhooks]]` keep today's behaviour: one message per alert, every alert.
        let mut channels = Vec::new();
        for (i, w) in raw.webhooks.into_iter().enumerate() {
            let raw = RawChannel {
                name: format!("webhooks[{i}]"),
                kind: ChannelKind::Webhook,
                url: w.url,
                secret: w.secret,
                ca_file: None,
                timeout_secs: w.timeout_secs,
                max_attempts: w.max_attempts.or(Some(6)),
                backoff_ms: w.backoff_ms,
                max_response_bytes: None,
                group_by: Some(vec![GroupBy::Rule, GroupBy::Subject]),
                group_wait_secs: Some(0),
                group_interval_secs: Some(0),
                rate_limit: Some(600),
                rate_window_secs: Some(60),
                max_alerts: None,
                smtp_host: None,
                smtp_port: None,
                smtp_tls: None,
                username: None,
                password: String::new(),
                from: None,
                to: Vec::new(),
            };
            channels.push(raw.check(&format!("webhooks[{i}]"), &mut bad));
        }
        for (i, c) in raw.channels.into_iter().enumerate() {
            channels.push(c.check(&format!("channels[{i}]"), &mut bad));
        }
        let mut channel_names = std::collections::HashSet::new();
        for (i, c) in channels.iter().enumerate() {
            if c.name.is_empty() || !channel_names.insert(c.name.clone()) {
                bad.push(format!(
                    "channels[{i}].name: {:?} is empty or appears twice",
                    c.name
                ));
            }
        }
        let mut routes = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            for c in &r.channels {
                if !channel_names.contains(c) {
                    bad.push(format!("routes[{i}].channels: no channel is named {c:?}"));
                }
            }
            for rule in &r.rules {
                if !crate::alerts::RULES.contains(&rule.as_str()) {
                    bad.push(format!("routes[{i}].rules: {rule:?} is not a rule"));
                }
            }
            for sev in &r.severities {
                if sev != "critical" && sev != "warning" {
                    bad.push(format!(
                        "routes[{i}].severities: {sev:?} is neither critical nor warning"
                    ));
                }
            }
            routes.push(RouteConfig {
                channels: r.channels,
                rules: r.rules,
                businesses: r.businesses,
                severities: r.severities,
            });
        }
        let delivery = DeliveryConfig {
            dashboard_url: raw
                .delivery
                .dashboard_url
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string(),
            tick_ms: raw.delivery.tick_ms.unwrap_or(1000).clamp(10, 60_000),
            channels,
            routes,
        };
        let http = raw.http.check(&mut bad);
        let login = raw.login.check(&mut bad);
        let default_interval_secs = raw.registry.default_interval_secs.unwrap_or(3600);
        if default_interval_secs <= 0 {
            bad.push(format!(
                "registry.default_interval_secs: {default_interval_secs} must be positive"
            ));
        }
        if !bad.is_empty() {
            return Err(ConfigError(bad));
        }
        let ha = {
            let r = raw.redis_sentinel;
            let sentinels = r.sentinels.map(|l| match l {
                RawSentinelList::List(v) => v,
                RawSentinelList::One(s) => ubackup_redis_ha::HaSettings::split_list(&s),
            });
            match ubackup_redis_ha::HaSettings::build(
                r.master_name,
                sentinels,
                r.sentinel_password,
                r.redis_password,
                r.wait_replicas,
                r.wait_timeout_ms.map(std::time::Duration::from_millis),
            ) {
                Ok(h) => h,
                Err(problems) => {
                    let bad: Vec<String> = problems
                        .into_iter()
                        .map(|(k, p)| format!("redis_sentinel.{k}: {p}"))
                        .collect();
                    return Err(ConfigError(bad));
                }
            }
        };
        Ok(Config {
            results: ResultsConfig {
                ha,
                redis: results_redis,
                list: raw.results.list.unwrap_or_else(|| "message".into()),
                processing_list: raw
                    .results
                    .processing_list
                    .unwrap_or_else(|| format!("ubackup:indexer:processing:{id}")),
                dead_letter: raw
                    .results
                    .dead_letter
                    .unwrap_or_else(|| "ubackup:indexer:dead".into()),
                forward_list: raw.results.forward_list.filter(|l| !l.is_empty()),
                batch,
                max_message_bytes,
            },
            id,
            catalog_url,
            max_connections: raw.catalog.max_connections.unwrap_or(8),
            retention_days: raw.catalog.retention_days.unwrap_or(400),
            prune_interval_secs: raw.catalog.prune_interval_secs.unwrap_or(3600).max(60),
            registry: RegistryConfig {
                auto_register: raw.registry.auto_register.unwrap_or(false),
                default_interval_secs,
            },
            clusters,
            alerts,
            delivery,
            http,
            login,
            log_level: raw.log.level.unwrap_or_else(|| "info".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let c = Config::parse(include_str!("../indexer.example.toml")).unwrap();
        assert_eq!(c.results.list, "message");
        assert_eq!(c.alerts.grace_secs, 3000);
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let e = Config::parse(
            "[catalog]\nurl = \"mysql://x\"\n[results]\nredis = \"http://x\"\nbatch = 0\n\
             [http]\nlisten = \"nope\"\n",
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 4, "{e}");
        assert!(Config::parse("[catalog]\nurll = 1\n").is_err());
    }

    #[test]
    fn https_webhooks_and_channels_parse_and_bad_ones_are_named() {
        // Issue 26: an https:// webhook was refused ("must be http://").
        let c = Config::parse(
            "[[webhooks]]\nurl = \"https://hooks.example.com/x\"\nsecret = \"0123456789abcdef\"\n\
             [[channels]]\nname = \"m\"\nkind = \"mail\"\nsmtp_host = \"smtp.example.com\"\n\
             from = \"a@example.com\"\nto = [\"b@example.com\"]\npassword = \"pw-secret\"\n\
             [[routes]]\nchannels = [\"m\"]\nseverities = [\"critical\"]\n",
        )
        .unwrap();
        assert_eq!(c.delivery.channels.len(), 2);
        assert_eq!(c.delivery.channels[0].kind, ChannelKind::Webhook);
        assert_eq!(c.delivery.channels[1].mail.as_ref().unwrap().port, 587);
        assert!(!format!("{c:?}").contains("pw-secret"));
        let e = Config::parse(
            "[[channels]]\nname = \"s\"\nkind = \"slack\"\nurl = \"ftp://x\"\n\
             [[routes]]\nchannels = [\"nope\"]\nrules = [\"nope\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 3, "{e}");
    }

    #[test]
    fn plain_http_off_loopback_with_secure_cookies_is_refused_with_both_ways_out() {
        let e = Config::parse("[http]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("http.tls_cert") && msg.contains("behind_tls_proxy"),
            "{msg}"
        );
        for ok in [
            "[http]\nlisten = \"127.0.0.1:8080\"\n",
            "[http]\nlisten = \"[::1]:8080\"\n",
            "[http]\nlisten = \"0.0.0.0:8080\"\nbehind_tls_proxy = true\n",
            "[http]\nlisten = \"0.0.0.0:8080\"\ntls_cert = \"a\"\ntls_key = \"b\"\n",
        ] {
            Config::parse(ok).unwrap();
        }
        assert!(Config::parse("[http]\ntls_cert = \"a\"\n").is_err());
        let c = Config::parse(
            "[http]\nmetrics_token = \"0123456789abcdef0123\"\nallowed_hosts = [\"A.example\"]\n",
        )
        .unwrap();
        assert_eq!(c.http.allowed_hosts, ["a.example"]);
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        assert!(Config::parse("[http]\nmetrics_token = \"short\"\n").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
    }
}
