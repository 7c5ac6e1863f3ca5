//! Overview: the last 24 hours' backups, bytes and failures, open alerts, the last 48 hours
//! per hour as a chart, and the slowest and most-failing instances.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::Html;

use super::chart::{bars, Point};
use super::errors::PageError;
use super::html::{bytes, duration, esc, layout, thead, url};
use super::session::PageViewer;
use crate::catalog::{AlertFilter, AlertGroupBy, AlertState, Coverage, InstanceTotals, MAX_GROUPS};
use crate::http::AppState;

const HOUR: i64 = 3_600_000;

fn top_table(id: &str, rows: &[InstanceTotals]) -> String {
    let mut o = format!("<div class=\"scroll\"><table id=\"{id}\">");
    o.push_str(&thead(&[
        "Instance",
        "Results",
        "Failed",
        "Mean pull",
        "Longest",
    ]));
    o.push_str("<tbody>");
    for r in rows {
        let _ = write!(
            o,
            "<tr><td><a href=\"/instances/{}/{}/{}\">{}</a></td><td class=\"num\">{}</td><td class=\"num{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            url(&r.key.server_id),
            url(&r.key.type_key),
            r.key.instance,
            esc(&r.key.subject()),
            r.count,
            if r.failures > 0 { " bad" } else { "" },
            r.failures,
            duration(r.duration_avg_ms),
            duration(r.duration_max_ms as f64)
        );
    }
    if rows.is_empty() {
        o.push_str("<tr><td colspan=\"5\" class=\"muted\">none</td></tr>");
    }
    o.push_str("</tbody></table></div>");
    o
}

/// The coverage line: how many instances are ok, overdue, failing, awaiting their first
/// backup or disabled, as numbers (links to the lists that show them) and one stacked bar.
fn coverage(c: &Coverage) -> String {
    let total = c.total.max(1) as f64;
    let parts = [
        ("ok", "OK", c.ok(), "ok", "/instances"),
        (
            "overdue",
            "Overdue",
            c.overdue,
            "bad",
            "/alerts?rule=overdue",
        ),
        (
            "failing",
            "Latest failed",
            c.failing,
            "bad",
            "/alerts?rule=script_error",
        ),
        (
            "awaiting",
            "Awaiting first backup",
            c.awaiting,
            "warn",
            "/instances",
        ),
        ("disabled", "Disabled", c.disabled, "muted", "/instances"),
    ];
    let mut o = format!(
        "<section class=\"coverage\" aria-label=\"Backup coverage\"><h2>Is the fleet backed up? <span class=\"muted\">{} registered instances</span></h2><div class=\"stack\" role=\"img\" aria-label=\"{} of {} instances ok\">",
        c.total,
        c.ok(),
        c.total
    );
    for (id, _, n, cls, _) in parts {
        if n > 0 {
            let _ = write!(
                o,
                "<i class=\"{cls}\" data-part=\"{id}\" style=\"width:{:.2}%\"></i>",
                100.0 * n as f64 / total
            );
        }
    }
    o.push_str("</div><ul class=\"legend\">");
    for (id, label, n, cls, href) in parts {
        let _ = write!(
            o,
            "<li><span class=\"dot {cls}\"></span><a href=\"{href}\">{label}</a> <b id=\"cov-{id}\">{n}</b></li>"
        );
    }
    o.push_str("</ul></section>");
    o
}

/// Nodes up, paused and down (by the `node_down` rule's test) and the job backlog, per cluster.
fn fleet(clusters: &[crate::cluster::ClusterStatus], now: i64, timeout_secs: i64) -> String {
    if clusters.is_empty() {
        return "<p class=\"muted\">No cluster is configured.</p>".into();
    }
    let mut o = String::from("<div class=\"scroll\"><table id=\"fleet\">");
    o.push_str(&thead(&[
        "Cluster",
        "Up",
        "Paused",
        "Down",
        "Queued jobs",
        "Oldest",
    ]));
    o.push_str("<tbody>");
    for c in clusters {
        if !c.reachable {
            let _ = write!(
                o,
                "<tr><td><a href=\"/nodes\">{}</a></td><td colspan=\"5\" class=\"bad\">Redis unreachable</td></tr>",
                esc(&c.name)
            );
            continue;
        }
        let (mut up, mut paused, mut down) = (0, 0, 0);
        for n in &c.nodes {
            if crate::alerts::node_down_reason(n, now, timeout_secs).is_some() {
                down += 1;
            } else if n.paused {
                paused += 1;
            } else {
                up += 1;
            }
        }
        let queued: i64 = c.queues.iter().map(|q| q.length).sum();
        let oldest = c.queues.iter().filter_map(|q| q.oldest_ms).min();
        let age = oldest.map(|t| (now - t).max(0) / 60_000);
        let _ = write!(
            o,
            "<tr data-cluster=\"{name}\"><td><a href=\"/nodes\">{name}</a></td><td class=\"num up\">{up}</td><td class=\"num paused{}\">{paused}</td><td class=\"num down{}\">{down}</td><td class=\"num queued\">{queued}</td><td class=\"num{}\">{}</td></tr>",
            if paused > 0 { " warn" } else { "" },
            if down > 0 { " bad" } else { "" },
            if age.is_some_and(|a| a > 60) { " bad" } else { "" },
            age.map(|a| format!("{a} min")).unwrap_or_else(|| "—".into()),
            name = esc(&c.name),
        );
    }
    o.push_str("</tbody></table></div>");
    o
}

/// `GET /`.
pub async fn page(
    State(s): State<AppState>,
    axum::Extension(web): axum::Extension<super::WebState>,
    PageViewer(me): PageViewer,
) -> Result<Html<String>, PageError> {
    let now = s.clock.now_ms();
    let end = (now / HOUR + 1) * HOUR;
    let start = end - 48 * HOUR;
    let day_from = now - 24 * HOUR;
    // Open alerts are counted by the catalog (there can be tens of thousands), and the four
    // independent queries run at once on the pool.
    let open_filter = AlertFilter {
        state: Some(AlertState::Open),
        now_ms: now,
        ..AlertFilter::default()
    };
    let (hours, by_rule, failing, slowest, cov) = tokio::try_join!(
        s.catalog.hourly(start, end),
        s.catalog
            .alert_groups(&open_filter, AlertGroupBy::Rule, MAX_GROUPS, 0),
        s.catalog.top_instances(day_from, now + 1, true, 10),
        s.catalog.top_instances(day_from, now + 1, false, 10),
        s.catalog.coverage(),
    )?;
    let open_n = by_rule.alert_count;
    let clusters = s.clusters.status().await;
    let (mut count, mut bytes_sum, mut failed) = (0i64, 0i64, 0i64);
    for h in hours.iter().filter(|h| h.hour_ms + HOUR > day_from) {
        count += h.count;
        bytes_sum += h.bytes;
        failed += h.failures;
    }
    let mut pts = Vec::with_capacity(48);
    let mut it = hours.iter().peekable();
    for i in 0..48 {
        let h0 = start + i * HOUR;
        let row = match it.peek() {
            Some(r) if r.hour_ms == h0 => it.next(),
            _ => None,
        };
        pts.push(Point {
            label: format!("{}h", (h0 / HOUR) % 24),
            title: format!("hour starting {h0}"),
            count: row.map_or(0, |r| r.count),
            failures: row.map_or(0, |r| r.failures),
            bytes: row.map_or(0, |r| r.bytes),
            hour_ms: Some(h0),
        });
    }
    let mut o = String::new();
    let _ = write!(
        o,
        "<div class=\"kpis\"><div class=\"kpi\"><span>Backups, last 24 h</span><b id=\"k-count\">{count}</b></div>\
         <div class=\"kpi\"><span>Bytes, last 24 h</span><b id=\"k-bytes\">{}</b></div>\
         <div class=\"kpi{}\"><span>Failures, last 24 h</span><b id=\"k-failed\">{failed}</b></div>\
         <div class=\"kpi{}\"><span>Open alerts</span><b><a href=\"/alerts\" id=\"k-alerts\">{open_n}</a></b></div></div>",
        bytes(bytes_sum),
        if failed > 0 { " bad" } else { "" },
        if open_n > 0 { " bad" } else { "" },
    );
    o.push_str(&coverage(&cov));
    o.push_str("<div class=\"grid2\"><section><h2>Open alerts by rule</h2>");
    if by_rule.groups.is_empty() {
        o.push_str("<p class=\"ok\" id=\"no-alerts\">No open alert.</p>");
    } else {
        o.push_str("<ul class=\"by-rule\" id=\"alerts-by-rule\">");
        for g in &by_rule.groups {
            let _ = write!(
                o,
                "<li><a href=\"/alerts?rule={}\">{}</a> <b>{}</b></li>",
                url(&g.key),
                esc(&g.key),
                g.count
            );
        }
        o.push_str("</ul>");
    }
    o.push_str("</section><section><h2>Nodes and queues</h2>");
    o.push_str(&fleet(&clusters, now, web.opts.node_timeout_secs));
    o.push_str("</section></div>");
    o.push_str(
        "<h2>Last 48 hours, per hour <span class=\"muted hours-zone\">(UTC hours)</span></h2>",
    );
    o.push_str(&bars(&pts, "Backups and bytes per hour, last 48 h", 6));
    o.push_str("<div class=\"grid2\"><section><h2>Most failing, last 24 h</h2>");
    o.push_str(&top_table("failing", &failing));
    o.push_str("</section><section><h2>Slowest, last 24 h</h2>");
    o.push_str(&top_table("slowest", &slowest));
    o.push_str("</section></div>");
    Ok(Html(layout("Overview", "/", Some(&me), &o)))
}
