//! The alert rules. One evaluation computes, from the catalog and the clusters' Redis, the set
//! of alerts that should be open; it opens what is new, resolves what cleared, and tells the
//! [`Notify`] sink about both. One alert is open per (rule, subject) at a time (a partial
//! unique index enforces it even with several indexers). Time comes from a [`Clock`].
//!
//! Each rule is documented for operators in `docs/alerts.md`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::catalog::{Alert, Catalog, CatalogError, InstanceKey, NewAlert};
use crate::clock::Clock;
use crate::cluster::ClusterStatus;
use crate::config::AlertsConfig;
use crate::metrics::Metrics;

/// Every rule name.
pub const RULES: &[&str] = &[
    "script_error",
    "overdue",
    "illegal",
    "node_down",
    "node_paused",
    "queue_backlog",
    "dead_letter",
    "chain_broken",
    "agent_down",
    "backup_corrupt",
];

/// UBackup's three alert kinds, the ones `/api/alert` serves.
pub const LEGACY_RULES: &[&str] = &["script_error", "overdue", "illegal"];

/// An alert changed state.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// `open` or `resolve`.
    pub event: &'static str,
    /// The alert after the change.
    pub alert: Alert,
}

/// Where notifications go (webhooks in production).
#[async_trait]
pub trait Notify: Send + Sync {
    /// Queues a notification; must not block on delivery.
    async fn notify(&self, n: Notification);
}

/// A sink that drops everything.
#[derive(Debug, Default)]
pub struct NoNotify;

#[async_trait]
impl Notify for NoNotify {
    async fn notify(&self, _n: Notification) {}
}

/// What one evaluation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Alerts opened.
    pub opened: Vec<(String, String)>,
    /// Alerts resolved.
    pub resolved: Vec<(String, String)>,
    /// Open after the evaluation, by rule.
    pub open_by_rule: BTreeMap<String, u64>,
}

/// The rule engine.
pub struct Engine {
    catalog: Arc<dyn Catalog>,
    clock: Arc<dyn Clock>,
    notify: Arc<dyn Notify>,
    metrics: Arc<Metrics>,
    cfg: AlertsConfig,
    auto_register: bool,
    default_interval_secs: i64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// When an instance whose last success (or registration) was at `since_ms` becomes overdue:
/// `since_ms + (interval_secs + grace_secs) * 1000`, saturating. The period comes from the
/// registry (an operator's form, a registry file) or from the results (a node), the grace from
/// the configuration: none of them bounds it, so the sum may not overflow.
pub fn overdue_deadline(since_ms: i64, interval_secs: i64, grace_secs: i64) -> i64 {
    since_ms.saturating_add(
        interval_secs
            .saturating_add(grace_secs)
            .saturating_mul(1000),
    )
}

fn instance_alert(rule: &str, key: &InstanceKey, message: String) -> NewAlert {
    NewAlert {
        rule: rule.into(),
        subject: key.subject(),
        key: Some(key.clone()),
        game_id: None,
        game_server_ip: None,
        message,
    }
}

fn other_alert(rule: &str, subject: String, message: String) -> NewAlert {
    NewAlert {
        rule: rule.into(),
        subject,
        key: None,
        game_id: None,
        game_server_ip: None,
        message,
    }
}

impl Engine {
    /// An engine.
    pub fn new(
        catalog: Arc<dyn Catalog>,
        clock: Arc<dyn Clock>,
        notify: Arc<dyn Notify>,
        metrics: Arc<Metrics>,
        cfg: AlertsConfig,
        auto_register: bool,
        default_interval_secs: i64,
    ) -> Engine {
        Engine {
            catalog,
            clock,
            notify,
            metrics,
            cfg,
            auto_register,
            default_interval_secs,
        }
    }

    /// The alerts that should be open now, keyed by (rule, subject).
    async fn wanted(
        &self,
        now: i64,
        clusters: &[ClusterStatus],
    ) -> Result<BTreeMap<(String, String), NewAlert>, CatalogError> {
        let c = &self.cfg;
        let mut want: Vec<NewAlert> = Vec::new();
        let registry: HashMap<InstanceKey, crate::catalog::Instance> = self
            .catalog
            .instances()
            .await?
            .into_iter()
            .map(|i| (i.key.clone(), i))
            .collect();
        let states = self.catalog.instance_states().await?;
        let mut by_key = HashMap::with_capacity(states.len());
        for s in &states {
            let reg = registry.get(&s.key);
            let enabled = reg.map(|r| r.enabled).unwrap_or(true);
            let with_host = |mut a: NewAlert| {
                a.game_id = s.game_id.or(reg.and_then(|r| r.business_id));
                a.game_server_ip = s.game_server_ip.clone();
                a
            };
            // script_error: the latest result failed.
            if enabled && s.last_ms > 0 && !s.last_succeed && !s.key.server_id.is_empty() {
                want.push(with_host(instance_alert(
                    "script_error",
                    &s.key,
                    format!("latest backup failed: {}", s.last_log),
                )));
            }
            // illegal: results for an unregistered instance, or an illegal message.
            let recent = |t: i64| t > 0 && now - t <= c.illegal_window_secs * 1000;
            if !self.auto_register
                && reg.is_none()
                && recent(s.last_ms)
                && !s.key.server_id.is_empty()
            {
                want.push(with_host(instance_alert(
                    "illegal",
                    &s.key,
                    "results arrive for an instance that is not registered".into(),
                )));
            } else if recent(s.last_illegal_ms) {
                want.push(with_host(instance_alert(
                    "illegal",
                    &s.key,
                    format!("a node refused a message as illegal: {}", s.last_log),
                )));
            }
            // backup_corrupt: a stored file failed its scrub, and no newer backup succeeded.
            if s.last_corrupt_ms > 0 && s.last_ok_ms <= s.last_corrupt_ms {
                want.push(with_host(instance_alert(
                    "backup_corrupt",
                    &s.key,
                    s.last_corrupt_reason.clone().unwrap_or_default(),
                )));
            }
            by_key.insert(s.key.clone(), s);
        }
        // overdue: no successful backup within interval + grace.
        for (key, reg) in &registry {
            if !reg.enabled {
                continue;
            }
            let s = by_key.get(key);
            let interval = reg
                .interval_secs
                .or(s.and_then(|s| s.interval_secs))
                .unwrap_or(self.default_interval_secs);
            let since = s
                .map(|s| s.last_ok_ms)
                .filter(|t| *t > 0)
                .unwrap_or(reg.created_ms);
            let deadline = overdue_deadline(since, interval, c.grace_secs);
            if now > deadline {
                let last = match s {
                    Some(s) if s.last_ok_ms > 0 => {
                        format!("last success {}", crate::clock::rfc3339(s.last_ok_ms))
                    }
                    _ => "never succeeded".into(),
                };
                let mut a = instance_alert(
                    "overdue",
                    key,
                    format!(
                        "no successful backup within {interval} s + {} s grace ({last})",
                        c.grace_secs
                    ),
                );
                a.game_id = reg.business_id.or(s.and_then(|s| s.game_id));
                a.game_server_ip = s.and_then(|s| s.game_server_ip.clone());
                want.push(a);
            }
        }
        // chain_broken: the latest success depends on a full that cannot be used.
        for (key, full) in self.catalog.broken_chains().await? {
            if registry.get(&key).is_some_and(|r| !r.enabled) {
                continue;
            }
            let mut a = instance_alert(
                "chain_broken",
                &key,
                format!("the latest incremental depends on full {full:?}, which is missing, failed, expired or corrupt"),
            );
            if let Some(s) = by_key.get(&key) {
                a.game_id = s.game_id;
                a.game_server_ip = s.game_server_ip.clone();
            }
            want.push(a);
        }
        // Cluster rules.
        let known_nodes = self.catalog.nodes().await?;
        let known_agents = self.catalog.agents().await?;
        let mut nodes_alive = Vec::new();
        let mut agents_alive = Vec::new();
        for cl in clusters {
            if !cl.reachable {
                want.push(other_alert(
                    "node_down",
                    format!("{}/redis", cl.name),
                    format!(
                        "cluster {} Redis unreachable: {}",
                        cl.name,
                        cl.error.clone().unwrap_or_default()
                    ),
                ));
                continue;
            }
            let mut present = std::collections::HashSet::new();
            for n in &cl.nodes {
                present.insert(n.node_id.clone());
                let subject = format!("{}/{}", cl.name, n.node_id);
                let stale = now - n.updated_ms > c.node_timeout_secs * 1000;
                if !n.alive || stale {
                    want.push(other_alert(
                        "node_down",
                        subject,
                        if n.alive {
                            format!("heartbeat {} s old", (now - n.updated_ms) / 1000)
                        } else {
                            "no heartbeat (its lease expired)".into()
                        },
                    ));
                } else {
                    nodes_alive.push((n.node_id.clone(), cl.name.clone(), n.ip.clone()));
                    if n.paused {
                        want.push(other_alert(
                            "node_paused",
                            subject,
                            format!("paused: {}", n.paused_reason),
                        ));
                    }
                }
            }
            for (node, cluster, _, _) in &known_nodes {
                if cluster == &cl.name && !present.contains(node) {
                    want.push(other_alert(
                        "node_down",
                        format!("{}/{node}", cl.name),
                        "no heartbeat (its lease expired)".into(),
                    ));
                }
            }
            for q in &cl.queues {
                if let Some(t) = q.oldest_ms {
                    if now - t > c.queue_backlog_secs * 1000 {
                        want.push(other_alert(
                            "queue_backlog",
                            format!("{}/{}", cl.name, q.list),
                            format!(
                                "{} jobs queued; the oldest is {} s old",
                                q.length,
                                (now - t) / 1000
                            ),
                        ));
                    }
                }
            }
            if cl.dead_letters > 0 {
                want.push(other_alert(
                    "dead_letter",
                    format!("{}/dead", cl.name),
                    format!("{} jobs exhausted their requeues", cl.dead_letters),
                ));
            }
            for (server, t) in &cl.agents {
                if *t == 0 || now - t <= c.agent_timeout_secs * 1000 {
                    agents_alive.push((server.clone(), cl.name.clone()));
                }
            }
            for (server, cluster, last) in &known_agents {
                if cluster != &cl.name {
                    continue;
                }
                let fresh = cl
                    .agents
                    .get(server)
                    .is_some_and(|t| *t == 0 || now - t <= c.agent_timeout_secs * 1000);
                if !fresh && now - last > c.agent_timeout_secs * 1000 {
                    want.push(other_alert(
                        "agent_down",
                        format!("{}/{server}", cl.name),
                        format!("agent heartbeat of {server} lapsed"),
                    ));
                }
            }
            // An agent seen now but stale was seen before: it stays known.
        }
        self.catalog.nodes_seen(&nodes_alive, now).await?;
        self.catalog.agents_seen(&agents_alive, now).await?;
        Ok(want
            .into_iter()
            .map(|a| ((a.rule.clone(), a.subject.clone()), a))
            .collect())
    }

    /// Runs every rule once.
    pub async fn evaluate(&self, clusters: &[ClusterStatus]) -> Result<Evaluation, CatalogError> {
        let started = std::time::Instant::now();
        let now = self.clock.now_ms();
        let want = self.wanted(now, clusters).await?;
        let open = self.catalog.open_alerts().await?;
        let mut out = Evaluation::default();
        let mut open_keys = HashMap::new();
        for a in &open {
            open_keys.insert((a.rule.clone(), a.subject.clone()), a);
        }
        for (k, a) in &want {
            match open_keys.get(k) {
                Some(existing) if existing.message == a.message => {}
                Some(_) => {
                    self.catalog.open_alert(a, now).await?;
                }
                None => {
                    if let Some(opened) = self.catalog.open_alert(a, now).await? {
                        out.opened.push(k.clone());
                        tracing::warn!(rule = %a.rule, subject = %a.subject, "{}", a.message);
                        self.notify
                            .notify(Notification {
                                event: "open",
                                alert: opened,
                            })
                            .await;
                    }
                }
            }
        }
        for (k, a) in &open_keys {
            if want.contains_key(k) {
                continue;
            }
            if let Some(resolved) = self.catalog.resolve_alert(&k.0, &k.1, now).await? {
                out.resolved.push(k.clone());
                tracing::info!(rule = %k.0, subject = %k.1, "resolved");
                let silenced = a.silenced_until_ms.is_some_and(|t| t > now);
                if !silenced {
                    self.notify
                        .notify(Notification {
                            event: "resolve",
                            alert: resolved,
                        })
                        .await;
                }
            }
        }
        for k in want.keys() {
            *out.open_by_rule.entry(k.0.clone()).or_default() += 1;
        }
        if let Ok(mut m) = self.metrics.open_alerts.lock() {
            *m = out.open_by_rule.clone();
        }
        self.metrics
            .evaluation_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::overdue_deadline;

    #[test]
    fn an_overdue_deadline_with_a_huge_period_saturates() {
        // Found writing the web_forms fuzz target: the dashboard's instance form took any
        // period, and `interval + grace` overflowed in the alert evaluation for a period of
        // i64::MAX (a panic with overflow checks, a deadline in the past without).
        assert_eq!(overdue_deadline(1_000, i64::MAX, 3000), i64::MAX);
        assert_eq!(overdue_deadline(i64::MAX, 3600, 3000), i64::MAX);
        assert_eq!(overdue_deadline(1_000, 3600, 3000), 1_000 + 6_600_000);
        assert_eq!(overdue_deadline(0, i64::MIN, 0), i64::MIN);
    }
}
