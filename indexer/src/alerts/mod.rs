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

use ubackup_messages::ILLEGAL_PREFIX;

use crate::catalog::outbox::OutEvent;
use crate::catalog::{
    Alert, AlertChanges, AppliedAlerts, Catalog, CatalogError, InstanceKey, NewAlert,
};
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

/// How urgent a rule is (routes filter on it): `critical` when backups are being lost or
/// cannot be restored, `warning` otherwise.
pub fn severity(rule: &str) -> &'static str {
    match rule {
        "node_down" | "backup_corrupt" | "chain_broken" | "script_error" => "critical",
        _ => "warning",
    }
}

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

    /// The sink's routing into the catalog's outbox, if it has one: the engine then writes the
    /// events with the alert changes, and does not call [`Notify::notify_all`].
    fn router(&self) -> Option<&dyn Route> {
        None
    }

    /// Queues the notifications of one evaluation (a sink with a store writes them at once).
    async fn notify_all(&self, ns: Vec<Notification>) {
        for n in ns {
            self.notify(n).await;
        }
    }
}

/// Turns notifications into outbox events (the delivery's routes). A [`Notify`] sink that
/// has one gets its events written in the evaluation's own transaction.
pub trait Route: Send + Sync {
    /// The events of these notifications.
    fn route(&self, ns: &[Notification]) -> Vec<OutEvent>;
}

/// The notifications of what an evaluation changed: opened alerts not held under a cause,
/// held ones whose cause cleared (`released`), and resolved ones that were neither held nor
/// silenced.
fn notifications(
    applied: &AppliedAlerts,
    released: &std::collections::HashSet<i64>,
    now: i64,
) -> Vec<Notification> {
    let note = |event: &'static str, a: &Alert| Notification {
        event,
        alert: a.clone(),
    };
    let opened = applied.opened.iter().filter(|a| a.held_by.is_none());
    let freed = applied
        .refreshed
        .iter()
        .filter(|a| released.contains(&a.id) && a.held_by.is_none());
    let resolved = applied
        .resolved
        .iter()
        .filter(|a| a.held_by.is_none() && a.silenced_until_ms.is_none_or(|t| t <= now));
    opened
        .chain(freed)
        .map(|a| note("open", a))
        .chain(resolved.map(|a| note("resolve", a)))
        .collect()
}

/// Alerts logged one by one per evaluation; past it, counts per rule (a storm of 20,000).
const LOGGED_ONE_BY_ONE: usize = 20;

fn log_changes(opened: &[Alert], resolved: &[Alert]) {
    for a in opened.iter().take(LOGGED_ONE_BY_ONE) {
        tracing::warn!(rule = %a.rule, subject = %a.subject, "{}", a.message);
    }
    for a in resolved.iter().take(LOGGED_ONE_BY_ONE) {
        tracing::info!(rule = %a.rule, subject = %a.subject, "resolved");
    }
    if opened.len() > LOGGED_ONE_BY_ONE || resolved.len() > LOGGED_ONE_BY_ONE {
        let mut by_rule: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for a in opened {
            *by_rule.entry(("opened", &a.rule)).or_default() += 1;
        }
        for a in resolved {
            *by_rule.entry(("resolved", &a.rule)).or_default() += 1;
        }
        for ((what, rule), n) in by_rule {
            tracing::warn!(rule, "{n} alerts {what} in this evaluation");
        }
    }
}

/// What the dashboard shows for a registered instance's backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceHealth {
    /// Disabled in the registry: no rule looks at it.
    Disabled,
    /// An `overdue` alert is open.
    Overdue,
    /// Registered, no success yet, and its period plus grace since registration has not
    /// passed: not overdue yet.
    AwaitingFirstBackup,
    /// It has succeeded and is not overdue.
    Ok,
}

impl InstanceHealth {
    /// Its name in the API and on the page.
    pub fn name(self) -> &'static str {
        match self {
            InstanceHealth::Disabled => "disabled",
            InstanceHealth::Overdue => "overdue",
            InstanceHealth::AwaitingFirstBackup => "awaiting_first_backup",
            InstanceHealth::Ok => "ok",
        }
    }

    /// For people.
    pub fn label(self) -> &'static str {
        match self {
            InstanceHealth::Disabled => "disabled",
            InstanceHealth::Overdue => "overdue",
            InstanceHealth::AwaitingFirstBackup => "awaiting first backup",
            InstanceHealth::Ok => "ok",
        }
    }
}

/// What [`instance_states`] read: the instances with a success, and those overdue.
#[derive(Debug, Default)]
pub struct HealthIndex {
    succeeded: std::collections::HashSet<InstanceKey>,
    overdue: std::collections::HashSet<String>,
}

impl HealthIndex {
    /// An instance's health, as the last evaluation left it.
    pub fn of(&self, i: &crate::catalog::Instance) -> InstanceHealth {
        if !i.enabled {
            InstanceHealth::Disabled
        } else if self.overdue.contains(&i.key.subject()) {
            InstanceHealth::Overdue
        } else if self.succeeded.contains(&i.key) {
            InstanceHealth::Ok
        } else {
            InstanceHealth::AwaitingFirstBackup
        }
    }
}

/// Reads what [`HealthIndex::of`] needs (the open `overdue` alerts, the instances that ever
/// succeeded): an instance never backed up is "awaiting first backup" until the evaluation
/// finds it overdue.
pub async fn instance_states(catalog: &dyn Catalog) -> Result<HealthIndex, CatalogError> {
    let succeeded = catalog
        .instance_states()
        .await?
        .into_iter()
        .filter(|s| s.last_ok_ms > 0)
        .map(|s| s.key)
        .collect();
    let overdue = catalog
        .alerts(&crate::catalog::AlertFilter {
            open: true,
            rule: Some("overdue".into()),
            limit: Some(100_000),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|a| a.subject)
        .collect();
    Ok(HealthIndex { succeeded, overdue })
}

/// [`instance_states`] for `keys` only (a page of the instance list): two indexed lookups
/// instead of every state row and every open `overdue` alert.
pub async fn instance_states_of(
    catalog: &dyn Catalog,
    keys: &[InstanceKey],
) -> Result<HealthIndex, CatalogError> {
    let succeeded = catalog.succeeded_among(keys).await?.into_iter().collect();
    let subjects: Vec<String> = keys.iter().map(InstanceKey::subject).collect();
    let overdue = catalog
        .open_subjects("overdue", &subjects)
        .await?
        .into_iter()
        .collect();
    Ok(HealthIndex { succeeded, overdue })
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
        held_by: None,
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
        held_by: None,
    }
}

/// The subject of the `illegal` alert on messages without identity (they share one
/// `instance_state` row: the empty key).
pub const NO_IDENTITY: &str = "(no identity)";

/// Dead-list entries classified per evaluation at most (the newest ones).
pub const DEAD_SCAN: i64 = crate::cluster::DEAD_SCAN;

/// What an `illegal` alert on a message without identity says: the node's reason, the raw
/// excerpt the node kept, the queue and the node.
fn no_identity_message(s: &crate::catalog::InstanceState) -> String {
    let mut m = format!(
        "a node refused a message without identity as illegal: {}",
        s.last_log
            .strip_prefix(ILLEGAL_PREFIX)
            .unwrap_or(&s.last_log)
    );
    if let Some(r) = &s.last_raw {
        m.push_str(&format!("; raw: {r}"));
    }
    if let Some(q) = &s.last_queue {
        m.push_str(&format!("; queue {q}"));
    }
    if let Some(n) = &s.last_node {
        m.push_str(&format!("; node {n}"));
    }
    m
}

/// The cause an alert is held under, as `held_by` stores it.
pub fn cause_of(rule: &str, subject: &str) -> String {
    format!("{rule}:{subject}")
}

/// Inhibition: an `overdue` alert whose host's agent is down (`agent_down`), or whose
/// instance's latest result came from a node that is down or paused (`node_down`,
/// `node_paused`; or its cluster's Redis is unreachable), is held under that cause: not
/// notified on its own, listed on the cause's page. The cause's message names how many it
/// holds.
fn inhibit<'a, N>(
    want: &mut [NewAlert],
    last_node: impl Fn(&InstanceKey) -> Option<&'a str>,
    nodes_of_cluster: N,
) where
    N: Fn(&str) -> Vec<String>,
{
    let mut by_node: HashMap<String, String> = HashMap::new();
    let mut by_host: HashMap<String, String> = HashMap::new();
    for a in want.iter() {
        let cause = cause_of(&a.rule, &a.subject);
        let Some((cluster, what)) = a.subject.split_once('/') else {
            continue;
        };
        match a.rule.as_str() {
            "node_down" if what == "redis" => {
                for n in nodes_of_cluster(cluster) {
                    by_node.entry(n).or_insert_with(|| cause.clone());
                }
            }
            "node_down" | "node_paused" => {
                // A node down outranks the same node paused (both cannot hold; down wins).
                let e = by_node
                    .entry(what.to_string())
                    .or_insert_with(|| cause.clone());
                if a.rule == "node_down" {
                    *e = cause;
                }
            }
            "agent_down" => {
                by_host.insert(what.to_string(), cause);
            }
            _ => {}
        }
    }
    if by_node.is_empty() && by_host.is_empty() {
        return;
    }
    let mut held: HashMap<String, usize> = HashMap::new();
    for a in want.iter_mut().filter(|a| a.rule == "overdue") {
        let Some(key) = &a.key else { continue };
        let cause = by_host
            .get(&key.server_id)
            .or_else(|| last_node(key).and_then(|n| by_node.get(n)));
        if let Some(c) = cause {
            *held.entry(c.clone()).or_default() += 1;
            a.held_by = Some(c.clone());
        }
    }
    for a in want.iter_mut() {
        if let Some(n) = held.get(&cause_of(&a.rule, &a.subject)) {
            a.message.push_str(&format!(
                "; holds {n} overdue alert{} it explains (listed on its page)",
                if *n == 1 { "" } else { "s" }
            ));
        }
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
            // script_error: the latest result failed. An illegal message is not a failed
            // backup: it has its own alert (`illegal`), not a second one here.
            let latest_illegal = s.last_log.starts_with(ILLEGAL_PREFIX);
            if enabled
                && s.last_ms > 0
                && !s.last_succeed
                && !latest_illegal
                && !s.key.server_id.is_empty()
            {
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
            } else if recent(s.last_illegal_ms) && s.key.server_id.is_empty() {
                // A message without identity (not JSON, no server_id): what the node kept of
                // it, the queue and the node, instead of empty instance fields.
                let mut a = other_alert("illegal", NO_IDENTITY.into(), no_identity_message(s));
                a.game_server_ip = s.game_server_ip.clone();
                want.push(a);
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
            let last_ok = s.map(|s| s.last_ok_ms).unwrap_or(0);
            let deadline = overdue_deadline(last_ok.max(reg.created_ms), interval, c.grace_secs);
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
                if let Some(why) = node_down_reason(n, now, c.node_timeout_secs) {
                    want.push(other_alert("node_down", subject, why));
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
            // Illegal messages wait in the dead list too, but each already has its `illegal`
            // alert: dead_letter counts the jobs that exhausted their requeues.
            let exhausted = cl.dead_letters.saturating_sub(cl.dead_illegal);
            if exhausted > 0 {
                let mut m = format!(
                    "{exhausted} job{} exhausted {} requeues",
                    if exhausted == 1 { "" } else { "s" },
                    if exhausted == 1 { "its" } else { "their" }
                );
                if cl.dead_illegal > 0 {
                    m.push_str(&format!(
                        "; the list also holds {} illegal message{} (see the illegal alerts)",
                        cl.dead_illegal,
                        if cl.dead_illegal == 1 { "" } else { "s" }
                    ));
                }
                if cl.dead_unread > 0 {
                    m.push_str(&format!(
                        "; {} older entries not classified (the newest {DEAD_SCAN} were)",
                        cl.dead_unread
                    ));
                }
                want.push(other_alert("dead_letter", format!("{}/dead", cl.name), m));
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
        let last_node: HashMap<&InstanceKey, &str> = states
            .iter()
            .filter_map(|s| Some((&s.key, s.last_node.as_deref()?)))
            .collect();
        let nodes_of_cluster = |cluster: &str| -> Vec<String> {
            known_nodes
                .iter()
                .filter(|(_, c, _, _)| c == cluster)
                .map(|(n, _, _, _)| n.clone())
                .collect()
        };
        inhibit(&mut want, |k| last_node.get(k).copied(), nodes_of_cluster);
        Ok(want
            .into_iter()
            .map(|a| ((a.rule.clone(), a.subject.clone()), a))
            .collect())
    }

    /// Runs every rule once. Its changes (and, with a routing sink, their outbox events) are
    /// written in one transaction.
    pub async fn evaluate(&self, clusters: &[ClusterStatus]) -> Result<Evaluation, CatalogError> {
        let started = std::time::Instant::now();
        let now = self.clock.now_ms();
        let want = self.wanted(now, clusters).await?;
        let open = self.catalog.open_alerts().await?;
        let mut out = Evaluation::default();
        let mut changes = AlertChanges::default();
        let mut open_keys = HashMap::new();
        for a in &open {
            open_keys.insert((a.rule.clone(), a.subject.clone()), a);
        }
        // Alerts whose cause cleared while they stay open: notified now, as Alertmanager
        // notifies an inhibited alert once its source resolves.
        let mut released = std::collections::HashSet::new();
        for (k, a) in &want {
            match open_keys.get(k) {
                Some(existing)
                    if existing.message == a.message && existing.held_by == a.held_by => {}
                Some(existing) => {
                    if existing.held_by.is_some() && a.held_by.is_none() {
                        released.insert(existing.id);
                    }
                    changes.refresh.push(a.clone());
                }
                None => changes.open.push(a.clone()),
            }
        }
        for (k, a) in &open_keys {
            if !want.contains_key(k) {
                changes.resolve.push(a.id);
            }
        }
        let router = self.notify.router();
        let route = |applied: &AppliedAlerts| -> Vec<OutEvent> {
            match router {
                Some(r) => r.route(&notifications(applied, &released, now)),
                None => Vec::new(),
            }
        };
        let applied = self.catalog.apply_alerts(&changes, now, &route).await?;
        log_changes(&applied.opened, &applied.resolved);
        out.opened = applied
            .opened
            .iter()
            .map(|a| (a.rule.clone(), a.subject.clone()))
            .collect();
        out.resolved = applied
            .resolved
            .iter()
            .map(|a| (a.rule.clone(), a.subject.clone()))
            .collect();
        if router.is_none() {
            self.notify
                .notify_all(notifications(&applied, &released, now))
                .await;
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

/// Why a node counts as down at `now`, or None when it is up: its heartbeat hash is gone (its
/// lease expired), or its heartbeat is older than `timeout_secs`. The `node_down` rule and the
/// pages that say "up" or "down" use this one test.
pub fn node_down_reason(
    n: &crate::cluster::NodeStatus,
    now: i64,
    timeout_secs: i64,
) -> Option<String> {
    if !n.alive {
        return Some("no heartbeat (its lease expired)".into());
    }
    let age_ms = now.saturating_sub(n.updated_ms);
    (age_ms > timeout_secs.saturating_mul(1000))
        .then(|| format!("heartbeat {} s old", age_ms / 1000))
}

#[cfg(test)]
mod tests {
    use super::{node_down_reason, overdue_deadline};
    use crate::cluster::NodeStatus;

    #[test]
    fn a_node_is_down_without_a_heartbeat_or_with_an_old_one() {
        let n = NodeStatus {
            alive: true,
            updated_ms: 1_000_000,
            ..NodeStatus::default()
        };
        assert_eq!(node_down_reason(&n, 1_000_000 + 120_000, 120), None);
        assert_eq!(
            node_down_reason(&n, 1_000_000 + 300_000, 120).as_deref(),
            Some("heartbeat 300 s old")
        );
        let gone = NodeStatus {
            alive: false,
            ..n.clone()
        };
        assert!(node_down_reason(&gone, 1_000_000, 120)
            .unwrap()
            .contains("lease expired"));
        // A heartbeat from the far past or future does not overflow.
        let odd = NodeStatus {
            updated_ms: i64::MIN,
            ..n
        };
        assert!(node_down_reason(&odd, i64::MAX, i64::MAX).is_none());
    }

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
