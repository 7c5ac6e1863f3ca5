//! Counters the ingest loop and the alert engine keep, rendered as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Results written as new rows.
    pub indexed: AtomicU64,
    /// Results already in the catalog.
    pub duplicates: AtomicU64,
    /// Node events that marked a row.
    pub events_marked: AtomicU64,
    /// Node events that matched no row.
    pub events_unmatched: AtomicU64,
    /// Messages dead-lettered, by reason kind.
    pub dead_lettered: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Catalog transactions committed.
    pub batches: AtomicU64,
    /// Catalog transactions that failed (retried).
    pub batch_failures: AtomicU64,
    /// Redis errors (reconnected).
    pub redis_errors: AtomicU64,
    /// now − rsync_time of the newest result indexed, ms.
    pub lag_ms: AtomicI64,
    /// Length of the results list at the last look.
    pub backlog: AtomicI64,
    /// Open alerts by rule, as of the last evaluation.
    pub open_alerts: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Duration of the last alert evaluation, ms.
    pub evaluation_ms: AtomicU64,
    /// Webhook deliveries that exhausted their attempts.
    pub webhook_failures: AtomicU64,
    /// Webhook deliveries made.
    pub webhook_deliveries: AtomicU64,
    /// Alert groups folded into a summary message by a channel's rate limit.
    pub alert_overflows: AtomicU64,
    /// Alert messages in the outbox not yet delivered.
    pub alert_outbox: AtomicI64,
    /// The results intake's Redis connection, once made: its master, failovers followed and
    /// reconnects are rendered from it at each scrape.
    pub results_redis: Mutex<Option<ubackup_redis_ha::HaConnection>>,
}

impl Metrics {
    /// Counts one dead letter.
    pub fn dead_letter(&self, kind: &'static str) {
        if let Ok(mut m) = self.dead_lettered.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }

    /// Total dead letters.
    pub fn dead_letters(&self) -> u64 {
        self.dead_lettered
            .lock()
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let c = |s: &mut String, name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        c(
            &mut s,
            "ubackup_indexer_results_indexed_total",
            "Results written to the catalog.",
            "counter",
            l(&self.indexed),
        );
        c(
            &mut s,
            "ubackup_indexer_results_duplicate_total",
            "Results already in the catalog (replays).",
            "counter",
            l(&self.duplicates),
        );
        c(
            &mut s,
            "ubackup_indexer_events_marked_total",
            "Node events that marked a backup.",
            "counter",
            l(&self.events_marked),
        );
        c(
            &mut s,
            "ubackup_indexer_events_unmatched_total",
            "Node events that matched no backup.",
            "counter",
            l(&self.events_unmatched),
        );
        c(
            &mut s,
            "ubackup_indexer_batches_total",
            "Catalog transactions committed.",
            "counter",
            l(&self.batches),
        );
        c(
            &mut s,
            "ubackup_indexer_batch_failures_total",
            "Catalog transactions that failed.",
            "counter",
            l(&self.batch_failures),
        );
        c(
            &mut s,
            "ubackup_indexer_redis_errors_total",
            "Redis errors.",
            "counter",
            l(&self.redis_errors),
        );
        c(
            &mut s,
            "ubackup_indexer_lag_seconds",
            "Now minus the rsync_time of the newest result indexed.",
            "gauge",
            format!("{:.3}", self.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0),
        );
        c(
            &mut s,
            "ubackup_indexer_backlog",
            "Results waiting on the results list.",
            "gauge",
            self.backlog.load(Ordering::Relaxed).to_string(),
        );
        c(
            &mut s,
            "ubackup_indexer_alert_evaluation_seconds",
            "Duration of the last alert evaluation.",
            "gauge",
            format!(
                "{:.3}",
                self.evaluation_ms.load(Ordering::Relaxed) as f64 / 1000.0
            ),
        );
        c(
            &mut s,
            "ubackup_indexer_webhook_deliveries_total",
            "Alert messages delivered (every channel).",
            "counter",
            l(&self.webhook_deliveries),
        );
        c(
            &mut s,
            "ubackup_indexer_webhook_failures_total",
            "Alert messages that gave up after their attempts (kept in the outbox).",
            "counter",
            l(&self.webhook_failures),
        );
        c(
            &mut s,
            "ubackup_indexer_alert_overflow_summaries_total",
            "Summary messages a channel's rate limit made of several alert groups.",
            "counter",
            l(&self.alert_overflows),
        );
        c(
            &mut s,
            "ubackup_indexer_alert_outbox_messages",
            "Alert messages waiting for delivery.",
            "gauge",
            self.alert_outbox.load(Ordering::Relaxed).to_string(),
        );
        let _ = writeln!(s, "# HELP ubackup_indexer_dead_letters_total Messages dead-lettered, by reason.\n# TYPE ubackup_indexer_dead_letters_total counter");
        if let Ok(m) = self.dead_lettered.lock() {
            for (k, v) in m.iter() {
                let _ = writeln!(
                    s,
                    "ubackup_indexer_dead_letters_total{{reason=\"{k}\"}} {v}"
                );
            }
        }
        let _ = writeln!(s, "# HELP ubackup_indexer_open_alerts Open alerts by rule.\n# TYPE ubackup_indexer_open_alerts gauge");
        if let Ok(m) = self.open_alerts.lock() {
            for rule in crate::alerts::RULES {
                let _ = writeln!(
                    s,
                    "ubackup_indexer_open_alerts{{rule=\"{rule}\"}} {}",
                    m.get(*rule).copied().unwrap_or(0)
                );
            }
        }
        let status = self
            .results_redis
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(ubackup_redis_ha::HaConnection::status));
        if let Some(status) = status {
            status.render_prometheus(&mut s, "ubackup_indexer", "conn=\"results\"", true);
        }
        s
    }
}
