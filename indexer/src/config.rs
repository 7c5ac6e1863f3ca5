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
    /// Webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// HTTP API.
    pub http: HttpConfig,
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
            .field("webhooks", &self.webhooks)
            .field("http", &self.http)
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
    /// Results per catalog transaction.
    pub batch: usize,
    /// Largest result accepted (bytes).
    pub max_message_bytes: usize,
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

/// A webhook.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `http://host:port/path`.
    pub url: String,
    /// HMAC-SHA256 key for `X-Ubackup-Signature`.
    pub secret: String,
    /// Per attempt (s).
    pub timeout_secs: u64,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// First retry delay (ms), doubled each time.
    pub backoff_ms: u64,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"***")
            .field("timeout_secs", &self.timeout_secs)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// The HTTP API.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address (none: no HTTP).
    pub listen: Option<SocketAddr>,
    /// Let UBackup's legacy GET routes answer without a token (the Chrome extension has none).
    pub anonymous_legacy_reads: bool,
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
    http: RawHttp,
    #[serde(default)]
    log: RawLog,
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
struct RawHttp {
    listen: Option<String>,
    anonymous_legacy_reads: Option<bool>,
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
        let mut webhooks = Vec::new();
        for (i, w) in raw.webhooks.into_iter().enumerate() {
            if !w.url.starts_with("http://") {
                bad.push(format!(
                    "webhooks[{i}].url: {:?} must be http:// (put a TLS proxy in front for https)",
                    w.url
                ));
            }
            if w.secret.len() < 16 {
                bad.push(format!(
                    "webhooks[{i}].secret: must be at least 16 characters"
                ));
            }
            webhooks.push(WebhookConfig {
                url: w.url,
                secret: w.secret,
                timeout_secs: w.timeout_secs.unwrap_or(10).max(1),
                max_attempts: w.max_attempts.unwrap_or(6).max(1),
                backoff_ms: w.backoff_ms.unwrap_or(1000),
            });
        }
        let listen = match raw.http.listen {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    bad.push(format!("http.listen: {s:?} is not ADDRESS:PORT"));
                    None
                }
            },
        };
        let default_interval_secs = raw.registry.default_interval_secs.unwrap_or(3600);
        if default_interval_secs <= 0 {
            bad.push(format!(
                "registry.default_interval_secs: {default_interval_secs} must be positive"
            ));
        }
        if !bad.is_empty() {
            return Err(ConfigError(bad));
        }
        Ok(Config {
            results: ResultsConfig {
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
            webhooks,
            http: HttpConfig {
                listen,
                anonymous_legacy_reads: raw.http.anonymous_legacy_reads.unwrap_or(false),
            },
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
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
    }
}
