//! Overview: the last 24 hours' backups, bytes and failures, open alerts, the last 48 hours
//! per hour as a chart, and the slowest and most-failing instances.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::Html;

use super::chart::{bars, Point};
use super::errors::PageError;
use super::html::{bytes, duration, esc, layout, thead, url};
use super::session::PageViewer;
use crate::catalog::{AlertFilter, AlertState, InstanceTotals};
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

/// `GET /`.
pub async fn page(
    State(s): State<AppState>,
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
    let (hours, open_n, failing, slowest) = tokio::try_join!(
        s.catalog.hourly(start, end),
        s.catalog.count_alerts(&open_filter),
        s.catalog.top_instances(day_from, now + 1, true, 10),
        s.catalog.top_instances(day_from, now + 1, false, 10),
    )?;
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
    o.push_str("<h2>Last 48 hours, per hour (UTC hours)</h2>");
    o.push_str(&bars(&pts, "Backups and bytes per hour, last 48 h", 6));
    o.push_str("<div class=\"grid2\"><section><h2>Most failing, last 24 h</h2>");
    o.push_str(&top_table("failing", &failing));
    o.push_str("</section><section><h2>Slowest, last 24 h</h2>");
    o.push_str(&top_table("slowest", &slowest));
    o.push_str("</section></div>");
    Ok(Html(layout("Overview", "/", Some(&me), &o)))
}
