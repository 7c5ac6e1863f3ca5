//! Clusters and nodes: capacity and use (warning above 80 %), the backlog of every queue,
//! each node's heartbeat (paused and why, throughput, busy workers), and node control
//! (pause, resume, drain, workers, bandwidth cap) through the cluster's Redis.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::errors::PageError;
use super::html::{bytes, csrf_field, esc, layout, thead, time, url};
use super::notice::{self, Notice};
use super::session::{PageOperator, PageViewer};
use crate::alerts::node_down_reason;
use crate::catalog::Role;
use crate::cluster::control::ControlChange;
use crate::http::AppState;

/// Use above this share of capacity is flagged.
pub const WARN_USE: f64 = 0.80;

/// Page query.
#[derive(Debug, Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    pub(crate) done: String,
    /// The notice's count (`web::notice`).
    #[serde(default)]
    pub(crate) n: String,
    /// After a control change: its action, shown when it is one of the form's.
    #[serde(default)]
    pub(crate) action: String,
    /// After a control change: its node, shown when the page lists that node.
    #[serde(default)]
    pub(crate) node: String,
}

/// A heartbeat's age ("12 s ago"), flagged past the timeout, with its time.
fn heartbeat(n: &crate::cluster::NodeStatus, now: i64, timeout_secs: i64) -> String {
    if !n.alive || n.updated_ms <= 0 {
        return "<span class=\"bad\">none</span>".into();
    }
    let age = now.saturating_sub(n.updated_ms).max(0) / 1000;
    let text = if age < 120 {
        format!("{age} s ago")
    } else if age < 7200 {
        format!("{} min ago", age / 60)
    } else {
        format!("{} h ago", age / 3600)
    };
    format!(
        "<span class=\"age{}\" data-age-s=\"{age}\">{text}</span><br><span class=\"muted\">{}</span>",
        if age > timeout_secs { " bad" } else { "" },
        time(n.updated_ms)
    )
}

fn use_bar(used: u64, total: u64) -> String {
    if total == 0 {
        return "<span class=\"muted\">unknown</span>".into();
    }
    let share = used as f64 / total as f64;
    let hot = share > WARN_USE;
    format!(
        "<div class=\"bar\" role=\"img\" aria-label=\"{pct:.0} % used\"><i style=\"width:{pct:.0}%\"{cls}></i></div>\
         <span class=\"{tcls}\">{pct:.0} % of {tot}{warn}</span>",
        pct = share * 100.0,
        cls = if hot { " class=\"hot\"" } else { "" },
        tcls = if hot { "bad" } else { "muted" },
        tot = bytes(total as i64),
        warn = if hot { " — above 80 %" } else { "" }
    )
}

/// `GET /nodes`.
pub async fn page(
    State(s): State<AppState>,
    axum::Extension(web): axum::Extension<super::WebState>,
    PageViewer(me): PageViewer,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, PageError> {
    let timeout = web.opts.node_timeout_secs;
    let clusters = s.clusters.status().await;
    let now = s.clock.now_ms();
    let can_write = me.user.role >= Role::Operator;
    let mut o = String::new();
    // The action and node only when they are the form's own values (a link cannot add words).
    let known_node = clusters
        .iter()
        .any(|c| c.nodes.iter().any(|n| n.node_id == q.node));
    let extra = (["pause", "resume", "drain", "tune"].contains(&q.action.as_str()) && known_node)
        .then(|| format!("({} on {})", q.action, q.node));
    o.push_str(&notice::html(&q.done, &q.n, extra.as_deref()));
    if clusters.is_empty() {
        o.push_str("<p class=\"muted\">No cluster is configured (<code>[[clusters]]</code>).</p>");
    }
    for c in &clusters {
        let _ = write!(
            o,
            "<section class=\"cluster\" data-cluster=\"{}\"><h2>Cluster {}</h2>",
            esc(&c.name),
            esc(&c.name)
        );
        if !c.reachable {
            let _ = write!(
                o,
                "<p class=\"bad\" role=\"alert\">Redis unreachable: {}</p></section>",
                esc(c.error.as_deref().unwrap_or(""))
            );
            continue;
        }
        // Up by the `node_down` rule's own test: a heartbeat no older than its timeout.
        let up = c
            .nodes
            .iter()
            .filter(|n| node_down_reason(n, now, timeout).is_none())
            .count();
        let _ = write!(
            o,
            "<div class=\"kpis\"><div class=\"kpi{}\"><span>Nodes up</span><b>{up} / {}</b></div>\
             <div class=\"kpi\"><span>Capacity used</span>{}</div>\
             <div class=\"kpi{}\"><span>Dead letters</span><b>{}</b></div>\
             <div class=\"kpi\"><span>Agents seen</span><b>{}</b></div></div>",
            if up < c.nodes.len() { " bad" } else { "" },
            c.nodes.len(),
            use_bar(c.used_bytes, c.total_bytes),
            if c.dead_letters > 0 { " bad" } else { "" },
            c.dead_letters,
            c.agents.len()
        );
        o.push_str("<h3>Queues</h3><div class=\"scroll\"><table class=\"queues\">");
        o.push_str(&thead(&["List", "Backlog", "Oldest job", "Age"]));
        o.push_str("<tbody>");
        for qs in &c.queues {
            let age = qs.oldest_ms.map(|t| ((now - t) / 1000).max(0));
            let _ = write!(
                o,
                "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num{}\">{}</td></tr>",
                esc(&qs.list),
                qs.length,
                qs.oldest_ms.map(time).unwrap_or_default(),
                if age.is_some_and(|a| a > 3600) { " bad" } else { "" },
                age.map(|a| format!("{} min", a / 60)).unwrap_or_default()
            );
        }
        o.push_str("</tbody></table></div>");
        let ids: Vec<String> = c.nodes.iter().map(|n| n.node_id.clone()).collect();
        let controls = s
            .clusters
            .read_controls(&c.name, &ids)
            .await
            .unwrap_or_default();
        o.push_str("<h3>Nodes</h3><div class=\"scroll\"><table class=\"nodes\">");
        o.push_str(&thead(&[
            "Node",
            "Address",
            "Heartbeat",
            "Disk",
            "State",
            "Busy / workers",
            "Throughput",
            "Done",
            "Failed",
            "Control",
        ]));
        o.push_str("<tbody>");
        for n in &c.nodes {
            let used = n.total_bytes.saturating_sub(n.free_bytes);
            let ctl = controls.get(&n.node_id);
            let down = node_down_reason(n, now, timeout);
            let state = if let Some(why) = &down {
                format!(
                    "<span class=\"bad\">down</span> <span class=\"muted\">{}</span>",
                    esc(why)
                )
            } else if n.paused {
                format!(
                    "<span class=\"warn\">paused</span> <span class=\"muted\">{}</span>",
                    esc(&n.paused_reason)
                )
            } else {
                "<span class=\"ok\">taking jobs</span>".to_string()
            };
            let ctl_text = match ctl {
                Some(c) if c.desired.is_some() => {
                    let d = c.desired.clone().unwrap_or_default();
                    let mut parts = Vec::new();
                    if d.paused {
                        parts.push("pause".to_string());
                    }
                    if d.drain {
                        parts.push("drain".to_string());
                    }
                    if let Some(w) = d.workers {
                        parts.push(format!("workers {w}"));
                    }
                    if let Some(b) = d.bwlimit {
                        parts.push(if b == 0 {
                            "no cap".into()
                        } else {
                            format!("cap {}/s", bytes(i64::try_from(b).unwrap_or(i64::MAX)))
                        });
                    }
                    format!(
                        "{} <span class=\"{}\">{}</span>",
                        if parts.is_empty() {
                            "as configured".into()
                        } else {
                            parts.join(", ")
                        },
                        if c.in_effect() { "ok" } else { "warn" },
                        if c.in_effect() { "applied" } else { "pending" }
                    )
                }
                _ => "<span class=\"muted\">as configured</span>".into(),
            };
            let _ = write!(
                o,
                "<tr data-node=\"{id}\"><td>{id}</td><td>{ip}<br><span class=\"muted\">{host}</span></td><td>{hb}</td><td>{disk}</td><td class=\"state\">{state}</td>\
                 <td class=\"num busy\">{busy} / {workers}</td><td class=\"num rate\">{rate}/s</td><td class=\"num done\">{done}</td><td class=\"num failed\">{failed}</td><td class=\"control\">{ctl_text}</td></tr>",
                id = esc(&n.node_id),
                ip = esc(&n.ip),
                host = esc(&n.host),
                hb = heartbeat(n, now, timeout),
                disk = use_bar(used, n.total_bytes),
                busy = n.busy_workers,
                workers = n.workers,
                rate = bytes(n.bytes_per_second as i64),
                done = n.done,
                failed = n.failed,
            );
        }
        o.push_str("</tbody></table></div>");
        if can_write && !c.nodes.is_empty() {
            let _ = write!(
                o,
                "<form method=\"post\" action=\"/nodes/control\" class=\"card filters\" aria-label=\"Node control in {cn}\" data-confirm=\"Send this change to the node? Pause and drain stop it taking jobs.\">{csrf}\
                 <input type=\"hidden\" name=\"cluster\" value=\"{cn}\">\
                 <div><label for=\"nc-node-{cid}\">Node</label><select id=\"nc-node-{cid}\" name=\"node\">{opts}</select></div>\
                 <div><label for=\"nc-act-{cid}\">Action</label><select id=\"nc-act-{cid}\" name=\"action\" required>\
                 <option value=\"\" selected disabled>choose…</option><option value=\"pause\">Pause</option><option value=\"resume\">Resume</option><option value=\"drain\">Drain</option>\
                 <option value=\"tune\">Set workers / cap only</option></select></div>\
                 <div><label for=\"nc-w-{cid}\">Workers</label><input id=\"nc-w-{cid}\" name=\"workers\" type=\"number\" min=\"0\" max=\"256\" placeholder=\"as is\"></div>\
                 <div><label for=\"nc-bw-{cid}\">Bandwidth cap (MiB/s, 0 = none)</label><input id=\"nc-bw-{cid}\" name=\"bwlimit_mib\" type=\"number\" min=\"0\" step=\"any\" placeholder=\"as is\"></div>\
                 <div><label for=\"nc-r-{cid}\">Reason</label><input id=\"nc-r-{cid}\" name=\"reason\" maxlength=\"200\" placeholder=\"why (audited)\"></div>\
                 <button type=\"submit\" id=\"nc-apply-{cid}\">Apply</button></form>\
                 <p class=\"muted\">A node applies a change at its next heartbeat and reports it back; \"pending\" turns \"applied\" then.</p>",
                csrf = csrf_field(&me),
                cn = esc(&c.name),
                cid = esc(&url(&c.name)),
                opts = c
                    .nodes
                    .iter()
                    .map(|n| format!("<option>{}</option>", esc(&n.node_id)))
                    .collect::<String>(),
            );
        }
        o.push_str("</section>");
    }
    Ok(Html(layout("Clusters and nodes", "/nodes", Some(&me), &o)))
}

/// Most workers a node can be set to.
pub const MAX_WORKERS: u32 = 256;

/// Highest bandwidth cap the form takes (MiB/s).
pub const MAX_BWLIMIT_MIB: f64 = 1_000_000.0;

/// Longest reason kept (characters).
pub const MAX_REASON_CHARS: usize = 200;

/// The control form.
#[derive(Debug, Deserialize)]
pub struct ControlForm {
    pub(crate) cluster: String,
    pub(crate) node: String,
    pub(crate) action: String,
    #[serde(default)]
    pub(crate) workers: String,
    #[serde(default)]
    pub(crate) bwlimit_mib: String,
    #[serde(default)]
    pub(crate) reason: String,
}

impl ControlForm {
    /// The change the form asks for, and the reason as audited (trimmed, at most
    /// [`MAX_REASON_CHARS`] characters): a node id of 1 to 255 bytes without control
    /// characters; an action among pause, resume, drain and tune; workers a whole number up to
    /// [`MAX_WORKERS`] when given; a bandwidth cap from 0 to [`MAX_BWLIMIT_MIB`] MiB/s when
    /// given. `user` names who paused or drained when no reason is given.
    pub fn change(&self, user: &str) -> Result<(ControlChange, String), PageError> {
        if self.node.is_empty() || self.node.len() > 255 || self.node.chars().any(char::is_control)
        {
            return Err(PageError::BadRequest("bad node id".into()));
        }
        let reason: String = self.reason.trim().chars().take(MAX_REASON_CHARS).collect();
        let mut ch = ControlChange::default();
        match self.action.as_str() {
            "pause" => {
                ch.paused = Some(true);
                ch.drain = Some(false);
                ch.reason = Some(if reason.is_empty() {
                    format!("paused by {user}")
                } else {
                    reason.clone()
                });
            }
            "resume" => {
                ch.paused = Some(false);
                ch.drain = Some(false);
                ch.reason = Some(String::new());
            }
            "drain" => {
                ch.drain = Some(true);
                ch.paused = Some(false);
                ch.reason = Some(if reason.is_empty() {
                    format!("drained by {user}")
                } else {
                    reason.clone()
                });
            }
            "tune" => {}
            other => return Err(PageError::BadRequest(format!("unknown action {other:?}"))),
        }
        match self.workers.trim() {
            "" => {}
            w => {
                let n: u32 = w
                    .parse()
                    .map_err(|_| PageError::BadRequest("workers: a whole number".into()))?;
                if n > MAX_WORKERS {
                    return Err(PageError::BadRequest(format!(
                        "workers: at most {MAX_WORKERS}"
                    )));
                }
                ch.workers = Some(Some(n));
            }
        }
        match self.bwlimit_mib.trim() {
            "" => {}
            b => {
                let mib: f64 = b
                    .parse()
                    .map_err(|_| PageError::BadRequest("bandwidth: a number of MiB/s".into()))?;
                if !(0.0..=MAX_BWLIMIT_MIB).contains(&mib) {
                    return Err(PageError::BadRequest(
                        "bandwidth: 0 to 1,000,000 MiB/s".into(),
                    ));
                }
                ch.bwlimit = Some(Some((mib * 1_048_576.0) as u64));
            }
        }
        Ok((ch, reason))
    }
}

/// `POST /nodes/control`.
pub async fn control(
    State(s): State<AppState>,
    PageOperator(me): PageOperator,
    Form(f): Form<ControlForm>,
) -> Result<Response, PageError> {
    let (ch, reason) = f.change(&me.user.name)?;
    let now = s.clock.now_ms();
    let after = s
        .clusters
        .write_control(&f.cluster, &f.node, &ch, &me.user.name, now)
        .await
        .map_err(|e| PageError::BadRequest(e.to_string()))?;
    s.catalog
        .audit(
            now,
            &me.user.name,
            "node.control",
            &serde_json::json!({
                "cluster": f.cluster, "node": f.node, "action": f.action,
                "workers": f.workers, "bwlimit_mib": f.bwlimit_mib, "reason": reason,
                "control": after,
            })
            .to_string(),
        )
        .await?;
    Ok(Redirect::to(&format!(
        "{}&action={}&node={}",
        notice::location("/nodes", Notice::ControlSent, None),
        url(&f.action),
        url(&f.node)
    ))
    .into_response())
}
