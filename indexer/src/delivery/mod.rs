//! Alert delivery: routes, grouping, rate limits and a durable outbox.
//!
//! ```text
//! Engine ─notify_all─▶ route (rule, business, severity) ─▶ alert_events (catalog)
//!   tick: due groups (group wait / group interval) ─compose─▶ alert_outbox (one row per message,
//!         idempotency key) ─▶ channel (HTTPS via reqwest, or SMTP via lettre) ─▶ delivered_ms
//! ```
//!
//! Every step is in the catalog, so a restart (or a `kill -9`) loses nothing: events not yet
//! composed are composed after it, messages not yet accepted are sent again with the same
//! idempotency key (at least once). A channel's rate limit never drops: when more groups are
//! due than the limit allows, the rest become one summary message (counted in a metric).
//! Several indexers may share a catalog: a message is leased before it is sent.

pub mod channel;
pub mod mail;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use ubackup_backoff::Backoff;

use crate::alerts::{severity, Notification, Notify, Route};
use crate::catalog::outbox::{OutEvent, Outbox, PendingGroup};
use crate::catalog::{Alert, CatalogError};
use crate::clock::Clock;
use crate::config::{ChannelConfig, DeliveryConfig, GroupBy, RouteConfig};
use crate::metrics::Metrics;

pub use channel::{signature, ChannelError};

/// Subjects named in a message's text.
pub const FIRST_SUBJECTS: usize = 5;
/// How long a message is leased while it is sent (ms).
const LEASE_MS: i64 = 120_000;
/// Messages sent per tick at most.
const SEND_BATCH: i64 = 100;
/// The longest wait before an alert message's next attempt (the channel's `backoff_ms`
/// doubles up to it).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// One message as stored in the outbox: what every channel renders from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `open`, `resolve`, or `summary` (an overflow of several groups).
    pub event: String,
    /// The rule (empty for a summary of several rules).
    pub rule: String,
    /// `critical` or `warning`.
    pub severity: String,
    /// The group's labels (`rule`, `business`, ...).
    pub group: BTreeMap<String, String>,
    /// How many alerts the message covers (exact).
    pub count: i64,
    /// The cause: the first alert's message (a summary: the groups it folds).
    pub cause: String,
    /// The first few subjects.
    pub subjects: Vec<String>,
    /// The dashboard page listing them (empty without `delivery.dashboard_url`).
    pub link: String,
    /// The alerts, in full, up to the channel's `max_alerts`.
    pub alerts: Vec<Alert>,
}

impl Message {
    /// One line a person reads first.
    pub fn title(&self) -> String {
        let what = match self.event.as_str() {
            "open" => "opened",
            "resolve" => "resolved",
            _ => "changed",
        };
        let mut t = format!("[ubackup] {} {}", self.severity, self.rule);
        if self.rule.is_empty() {
            t = format!("[ubackup] {}", self.severity);
        }
        t.push_str(&format!(
            ": {} alert{} {what}",
            self.count,
            plural(self.count)
        ));
        if let Some(b) = self.group.get("business") {
            t.push_str(&format!(" (business {b})"));
        }
        if let Some(h) = self.group.get("host") {
            t.push_str(&format!(" (host {h})"));
        }
        if let Some(n) = self.group.get("node") {
            t.push_str(&format!(" (node {n})"));
        }
        t
    }

    /// The body lines: the cause, the first subjects, the link.
    pub fn lines(&self) -> Vec<String> {
        let mut v = vec![format!("Cause: {}", self.cause)];
        let more = self.count - self.subjects.len() as i64;
        let mut s = self.subjects.join(", ");
        if more > 0 {
            s.push_str(&format!(" and {more} more"));
        }
        v.push(format!("Subjects: {s}"));
        if !self.link.is_empty() {
            v.push(format!("Dashboard: {}", self.link));
        }
        v
    }

    /// Title and lines as plain text.
    pub fn text(&self) -> String {
        let mut t = self.title();
        for l in self.lines() {
            t.push('\n');
            t.push_str(&l);
        }
        t
    }
}

fn plural(n: i64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The labels an alert is grouped by on a channel.
fn group_labels(by: &[GroupBy], event: &str, a: &Alert) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("event".to_string(), event.to_string());
    for g in by {
        let (k, v) = match g {
            GroupBy::Rule => ("rule", a.rule.clone()),
            GroupBy::Business => (
                "business",
                a.game_id
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            GroupBy::Host => ("host", host_of(a).unwrap_or_else(|| "-".into())),
            GroupBy::Node => ("node", node_of(a).unwrap_or_else(|| "-".into())),
            GroupBy::Subject => ("subject", a.subject.clone()),
        };
        m.insert(k.to_string(), v);
    }
    m
}

/// The DB host an alert is about (its server id), if any.
pub fn host_of(a: &Alert) -> Option<String> {
    a.server_id.clone().filter(|s| !s.is_empty())
}

/// The backup node a node alert is about (`cluster/node` subjects), if any.
pub fn node_of(a: &Alert) -> Option<String> {
    matches!(a.rule.as_str(), "node_down" | "node_paused")
        .then(|| a.subject.split_once('/').map(|(_, n)| n.to_string()))
        .flatten()
}

fn group_key(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("|")
}

/// Whether a route takes an alert.
fn route_matches(r: &RouteConfig, a: &Alert) -> bool {
    (r.rules.is_empty() || r.rules.contains(&a.rule))
        && (r.businesses.is_empty() || a.game_id.is_some_and(|b| r.businesses.contains(&b)))
        && (r.severities.is_empty() || r.severities.iter().any(|s| s == severity(&a.rule)))
}

/// Why the delivery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A channel's client could not be built (its CA file, its TLS setup).
    #[error("channel {name}: {source}")]
    Channel {
        /// The channel.
        name: String,
        /// Why.
        source: ChannelError,
    },
}

/// The delivery: a [`Notify`] sink that routes into the outbox, and the worker that groups and
/// sends (call [`Delivery::tick`], or run [`Delivery::run`]).
pub struct Delivery {
    outbox: Arc<dyn Outbox>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    dashboard_url: String,
    routes: Vec<RouteConfig>,
    channels: HashMap<String, channel::Channel>,
    order: Vec<String>,
    tick: Duration,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("channels", &self.order)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Builds every channel's client (reading CA files).
    pub fn new(
        cfg: &DeliveryConfig,
        outbox: Arc<dyn Outbox>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Delivery, SetupError> {
        let mut channels = HashMap::new();
        let mut order = Vec::new();
        for c in &cfg.channels {
            let ch = channel::Channel::new(c.clone()).map_err(|source| SetupError::Channel {
                name: c.name.clone(),
                source,
            })?;
            order.push(c.name.clone());
            channels.insert(c.name.clone(), ch);
        }
        Ok(Delivery {
            outbox,
            clock,
            metrics,
            dashboard_url: cfg.dashboard_url.clone(),
            routes: cfg.routes.clone(),
            channels,
            order,
            tick: Duration::from_millis(cfg.tick_ms),
        })
    }

    /// The channels an alert goes to.
    fn channels_for(&self, a: &Alert) -> Vec<&ChannelConfig> {
        self.order
            .iter()
            .filter_map(|n| self.channels.get(n))
            .map(|c| c.config())
            .filter(|c| {
                self.routes.is_empty()
                    || c.name.starts_with("webhooks[")
                    || self
                        .routes
                        .iter()
                        .any(|r| r.channels.contains(&c.name) && route_matches(r, a))
            })
            .collect()
    }

    /// The outbox events of these notifications: one per channel whose route takes the alert.
    pub fn events(&self, ns: &[Notification]) -> Vec<OutEvent> {
        let mut events = Vec::new();
        for n in ns {
            let body = match serde_json::to_string(n) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("alert {} not serializable: {e}", n.alert.id);
                    continue;
                }
            };
            for c in self.channels_for(&n.alert) {
                events.push(OutEvent {
                    channel: c.name.clone(),
                    group_key: group_key(&group_labels(&c.group_by, n.event, &n.alert)),
                    body: body.clone(),
                });
            }
        }
        events
    }

    /// Routes notifications into the outbox (one transaction).
    pub async fn enqueue(&self, ns: &[Notification]) -> Result<usize, CatalogError> {
        let events = self.events(ns);
        self.outbox
            .push_events(&events, self.clock.now_ms())
            .await?;
        Ok(events.len())
    }

    /// The dashboard page listing a group's alerts.
    fn link(&self, event: &str, rule: &str, business: Option<&String>) -> String {
        if self.dashboard_url.is_empty() {
            return String::new();
        }
        let state = if event == "resolve" {
            "resolved"
        } else {
            "open"
        };
        let mut l = format!("{}/alerts?state={state}", self.dashboard_url);
        if !rule.is_empty() {
            l.push_str(&format!("&rule={rule}"));
        }
        if let Some(b) = business.filter(|b| b.parse::<i64>().is_ok()) {
            l.push_str(&format!("&business={b}"));
        }
        l
    }

    /// Reads a group's events into a message's alerts (up to `max`), and its first subjects.
    async fn group_alerts(
        &self,
        g: &PendingGroup,
        max: usize,
    ) -> Result<(String, Vec<Alert>), CatalogError> {
        let limit = i64::try_from(max.max(FIRST_SUBJECTS)).unwrap_or(i64::MAX);
        let bodies = self
            .outbox
            .group_events(&g.channel, &g.group_key, g.max_id, limit)
            .await?;
        let mut event = String::from("open");
        let mut alerts = Vec::new();
        for b in bodies {
            match serde_json::from_str::<StoredNotification>(&b) {
                Ok(n) => {
                    event = n.event;
                    alerts.push(n.alert);
                }
                Err(e) => tracing::error!("outbox event unreadable: {e}"),
            }
        }
        Ok((event, alerts))
    }

    /// Composes due groups into messages (honouring each channel's rate limit).
    pub async fn compose_due(&self) -> Result<usize, CatalogError> {
        let now = self.clock.now_ms();
        let mut due: BTreeMap<&str, Vec<PendingGroup>> = BTreeMap::new();
        for g in self.outbox.pending_groups().await? {
            let Some(ch) = self.channels.get(&g.channel) else {
                continue;
            };
            let c = ch.config();
            let wait = secs_ms(c.group_wait_secs);
            let interval = secs_ms(c.group_interval_secs);
            let ready = now >= g.first_ms.saturating_add(wait)
                && g.last_message_ms
                    .is_none_or(|t| now >= t.saturating_add(interval));
            if ready {
                due.entry(ch.config().name.as_str()).or_default().push(g);
            }
        }
        let mut made = 0;
        for (name, groups) in due {
            let Some(ch) = self.channels.get(name) else {
                continue;
            };
            let c = ch.config();
            let sent = self
                .outbox
                .messages_since(name, now - secs_ms(c.rate_window_secs))
                .await?;
            let allowed = i64::from(c.rate_limit) - sent;
            if allowed <= 0 {
                continue; // the window frees up; the events wait
            }
            let allowed = usize::try_from(allowed).unwrap_or(usize::MAX);
            let (singles, rest) = if groups.len() <= allowed {
                (groups.as_slice(), &[][..])
            } else {
                groups.split_at(allowed - 1)
            };
            for g in singles {
                let (event, alerts) = self.group_alerts(g, c.max_alerts).await?;
                let Some(first) = alerts.first() else {
                    continue;
                };
                let labels = group_labels(&c.group_by, &event, first);
                let m = Message {
                    rule: labels
                        .get("rule")
                        .cloned()
                        .unwrap_or_else(|| first.rule.clone()),
                    severity: severity(&first.rule).into(),
                    count: g.count,
                    cause: first.message.clone(),
                    subjects: alerts
                        .iter()
                        .take(FIRST_SUBJECTS)
                        .map(|a| a.subject.clone())
                        .collect(),
                    link: self.link(&event, &first.rule, labels.get("business")),
                    alerts: alerts.into_iter().take(c.max_alerts).collect(),
                    group: labels.into_iter().filter(|(k, _)| k != "event").collect(),
                    event,
                };
                if self
                    .store(
                        name,
                        &g.group_key,
                        &m,
                        &[(g.group_key.clone(), g.max_id)],
                        g.max_id,
                        now,
                    )
                    .await?
                {
                    made += 1;
                }
            }
            if !rest.is_empty() {
                made += usize::from(self.summarize(ch.config(), rest, now).await?);
            }
        }
        Ok(made)
    }

    /// One message for several due groups (a channel over its rate limit).
    async fn summarize(
        &self,
        c: &ChannelConfig,
        groups: &[PendingGroup],
        now: i64,
    ) -> Result<bool, CatalogError> {
        let mut count = 0i64;
        let mut parts = Vec::new();
        let mut subjects = Vec::new();
        let mut alerts = Vec::new();
        let mut critical = false;
        for g in groups {
            let (event, a) = self.group_alerts(g, c.max_alerts).await?;
            count = count.saturating_add(g.count);
            if let Some(first) = a.first() {
                critical |= severity(&first.rule) == "critical";
                parts.push(format!(
                    "{} {} {event}: {}",
                    g.count, first.rule, first.message
                ));
            }
            for x in a {
                if subjects.len() < FIRST_SUBJECTS {
                    subjects.push(x.subject.clone());
                }
                if alerts.len() < c.max_alerts {
                    alerts.push(x);
                }
            }
        }
        let max_id = groups.iter().map(|g| g.max_id).max().unwrap_or(0);
        let m = Message {
            event: "summary".into(),
            rule: String::new(),
            severity: if critical { "critical" } else { "warning" }.into(),
            group: BTreeMap::new(),
            count,
            cause: format!(
                "rate limit reached ({} messages per {} s); {} groups folded: {}",
                c.rate_limit,
                c.rate_window_secs,
                groups.len(),
                parts.join("; ")
            ),
            subjects,
            link: self.link("open", "", None),
            alerts,
        };
        let covers: Vec<(String, i64)> = groups
            .iter()
            .map(|g| (g.group_key.clone(), g.max_id))
            .collect();
        let stored = self
            .store(&c.name, "summary", &m, &covers, max_id, now)
            .await?;
        if stored {
            self.metrics.alert_overflows.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(channel = %c.name, groups = groups.len(), alerts = count, "rate limit: groups folded into one summary");
        }
        Ok(stored)
    }

    async fn store(
        &self,
        channel: &str,
        group_key: &str,
        m: &Message,
        covers: &[(String, i64)],
        max_id: i64,
        now: i64,
    ) -> Result<bool, CatalogError> {
        let body = serde_json::to_string(m)
            .map_err(|e| CatalogError::Row(format!("message not serializable: {e}")))?;
        // Event ids only grow and a message removes the events it covers: (channel, newest
        // event) names one message for good.
        let key = format!(
            "ubackup-{}-{max_id}",
            hex::encode(sha(channel).get(..8).unwrap_or_default())
        );
        self.outbox
            .compose(channel, group_key, &key, &body, covers, now)
            .await
    }

    /// Sends the due messages; returns how many were accepted.
    pub async fn send_due(&self) -> Result<usize, CatalogError> {
        let mut ok = 0;
        let due = self
            .outbox
            .due_messages(self.clock.now_ms(), SEND_BATCH)
            .await?;
        for m in due {
            let now = self.clock.now_ms();
            if !self.outbox.lease(m.id, now, now + LEASE_MS).await? {
                continue;
            }
            let Some(ch) = self.channels.get(&m.channel) else {
                // A channel removed from the config: its messages wait for it to come back.
                self.outbox
                    .attempt_failed(m.id, now + 3_600_000, "no such channel", false, now)
                    .await?;
                continue;
            };
            let msg: Message = match serde_json::from_str(&m.body) {
                Ok(x) => x,
                Err(e) => {
                    self.outbox
                        .attempt_failed(m.id, now, &format!("unreadable: {e}"), true, now)
                        .await?;
                    continue;
                }
            };
            match ch.send(&msg, &m.idem_key, now).await {
                Ok(()) => {
                    self.outbox.delivered(m.id, self.clock.now_ms()).await?;
                    self.metrics
                        .webhook_deliveries
                        .fetch_add(1, Ordering::Relaxed);
                    ok += 1;
                }
                Err(e) => {
                    let c = ch.config();
                    let attempts = m.attempts.saturating_add(1);
                    let give_up = attempts >= i64::from(c.max_attempts);
                    let failures = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
                    let delay = Backoff::new(Duration::from_millis(c.backoff_ms), MAX_RETRY_DELAY)
                        .delay_for(failures);
                    let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                    let now = self.clock.now_ms();
                    // Recorded first: the counter then never shows a give-up the outbox
                    // does not hold yet.
                    self.outbox
                        .attempt_failed(m.id, now + delay, &e.to_string(), give_up, now)
                        .await?;
                    if give_up {
                        self.metrics
                            .webhook_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::error!(channel = %c.name, key = %m.idem_key, attempts, "alert message gave up: {e}");
                    } else {
                        tracing::warn!(channel = %c.name, key = %m.idem_key, attempts, "alert message failed: {e}; retrying in {delay} ms");
                    }
                }
            }
        }
        Ok(ok)
    }

    /// One round: compose what is due, send what is due.
    pub async fn tick(&self) -> Result<usize, CatalogError> {
        self.compose_due().await?;
        let sent = self.send_due().await?;
        if let Ok(n) = self.outbox.undelivered().await {
            self.metrics.alert_outbox.store(n, Ordering::Relaxed);
        }
        Ok(sent)
    }

    /// Ticks until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            if let Err(e) = self.tick().await {
                tracing::warn!("alert delivery: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.tick) => {},
                r = stop.changed() => {
                    if r.is_err() {
                        return; // the sender is gone: nobody can stop us later
                    }
                },
            }
        }
    }
}

fn secs_ms(s: u64) -> i64 {
    i64::try_from(s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

fn sha(s: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes()).to_vec()
}

/// A [`Notification`] read back from the outbox.
#[derive(Debug, Deserialize)]
struct StoredNotification {
    event: String,
    alert: Alert,
}

impl Route for Delivery {
    fn route(&self, ns: &[Notification]) -> Vec<OutEvent> {
        self.events(ns)
    }
}

#[async_trait]
impl Notify for Delivery {
    fn router(&self) -> Option<&dyn Route> {
        Some(self)
    }

    async fn notify(&self, n: Notification) {
        self.notify_all(vec![n]).await;
    }

    async fn notify_all(&self, ns: Vec<Notification>) {
        if ns.is_empty() {
            return;
        }
        if let Err(e) = self.enqueue(&ns).await {
            self.metrics
                .webhook_failures
                .fetch_add(ns.len() as u64, Ordering::Relaxed);
            tracing::error!(
                alerts = ns.len(),
                "alert notifications not queued (catalog): {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, subject: &str) -> Alert {
        Alert {
            id: 1,
            rule: rule.into(),
            subject: subject.into(),
            server_id: Some("S1".into()),
            back_type: None,
            instance: None,
            game_id: Some(7),
            game_server_ip: None,
            message: "m".into(),
            opened_ms: 0,
            updated_ms: 0,
            resolved_ms: None,
            acked_by: None,
            acked_ms: None,
            silenced_until_ms: None,
            held_by: None,
            silenced_by: None,
        }
    }

    #[test]
    fn groups_by_the_configured_labels_and_the_event() {
        let a = alert("overdue", "S1:mysql:1");
        let k = group_key(&group_labels(
            &[GroupBy::Rule, GroupBy::Business],
            "open",
            &a,
        ));
        assert_eq!(k, "business=7|event=open|rule=overdue");
        let n = alert("node_down", "c1/n1");
        assert_eq!(node_of(&n).as_deref(), Some("n1"));
        assert_eq!(node_of(&a), None);
    }

    #[test]
    fn a_message_names_the_count_the_cause_and_the_first_subjects() {
        let m = Message {
            event: "open".into(),
            rule: "overdue".into(),
            severity: "warning".into(),
            group: [("business".to_string(), "7".to_string())].into(),
            count: 20_000,
            cause: "no successful backup".into(),
            subjects: vec!["a".into(), "b".into()],
            link: "https://d/alerts?state=open&rule=overdue&business=7".into(),
            alerts: vec![],
        };
        let t = m.text();
        assert!(t.starts_with("[ubackup] warning overdue: 20000 alerts opened (business 7)"));
        assert!(t.contains("Subjects: a, b and 19998 more"));
        assert!(t.contains("Dashboard: https://d/alerts"));
    }
}
