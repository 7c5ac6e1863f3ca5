//! Alerts: the list (filter by state, rule and business; the user's focus businesses first),
//! ack and silence with a comment, the per-alert view with the instance's latest 480 backups in
//! UBackup's modal columns plus checksum and chain, and the JSON feed the page polls to raise
//! Web Notifications for new alerts in focus businesses.

mod bulk;
mod view;

pub use bulk::{bulk, cancel_silence, silences, BulkForm};
pub use view::samples;

use std::collections::HashSet;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::response::{Html, Response};
use axum::{Form, Json};
use serde::Deserialize;

use super::errors::PageError;
use super::html::{csrf_field, esc, layout, time, url};
use super::instances::backups_table;
use super::notice::{self, Notice};
use super::session::{PageOperator, PageViewer, Session};
use crate::catalog::{Alert, AlertFilter, AlertGroupBy, AlertState, InstanceKey, Page, Role};
use crate::http::AppState;

/// Alerts shown per page of the list (the catalog pages them: one query for the rows and one
/// for the count, whatever the number of open alerts).
pub const PAGE_ROWS: i64 = 100;

/// Alerts in the notification feed (newest open ones, focus businesses first).
pub const FEED_ROWS: i64 = 500;

/// Backups shown in the per-alert view (UBackup's 480).
pub const HISTORY_ROWS: i64 = 480;

/// The state filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StateFilter {
    /// Open, not acknowledged, not silenced.
    #[default]
    Open,
    /// Open and acknowledged.
    Acked,
    /// Open and silenced.
    Silenced,
    /// Resolved.
    Resolved,
    /// Everything.
    All,
}

impl StateFilter {
    /// Every state, in the filter's order.
    pub const ALL: [StateFilter; 5] = [
        StateFilter::Open,
        StateFilter::Acked,
        StateFilter::Silenced,
        StateFilter::Resolved,
        StateFilter::All,
    ];

    fn catalog(self) -> Option<AlertState> {
        match self {
            StateFilter::Open => Some(AlertState::Open),
            StateFilter::Acked => Some(AlertState::Acked),
            StateFilter::Silenced => Some(AlertState::Silenced),
            StateFilter::Resolved => Some(AlertState::Resolved),
            StateFilter::All => None,
        }
    }

    /// Its name in the query and on the page.
    pub fn name(self) -> &'static str {
        match self {
            StateFilter::Open => "open",
            StateFilter::Acked => "acked",
            StateFilter::Silenced => "silenced",
            StateFilter::Resolved => "resolved",
            StateFilter::All => "all",
        }
    }
}

/// The state of one alert at `now`.
pub fn state_of(a: &Alert, now: i64) -> StateFilter {
    if a.resolved_ms.is_some() {
        StateFilter::Resolved
    } else if a.silenced_until_ms.is_some_and(|t| t > now) {
        StateFilter::Silenced
    } else if a.acked_ms.is_some() {
        StateFilter::Acked
    } else {
        StateFilter::Open
    }
}

/// The user's focus businesses (UBackup's JSON list; numbers or numeric strings).
pub fn focus_of(s: &Session) -> HashSet<i64> {
    serde_json::from_str::<Vec<serde_json::Value>>(&s.user.focus_business)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()))
        .collect()
}

/// List query.
#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    pub(crate) state: StateFilter,
    #[serde(default)]
    pub(crate) rule: String,
    #[serde(default)]
    pub(crate) business: String,
    #[serde(default)]
    pub(crate) done: String,
    /// The notice's count (`web::notice`).
    #[serde(default)]
    pub(crate) n: String,
    /// 1-based page of the list.
    #[serde(default)]
    pub(crate) page: Option<i64>,
    /// Only the alerts held under this cause (`rule:subject`).
    #[serde(default)]
    pub(crate) held_by: String,
    /// Only the alerts of this database host.
    #[serde(default)]
    pub(crate) host: String,
    /// Group by `rule`, `business`, `host` or `cause` (empty: the list).
    #[serde(default)]
    pub(crate) group: String,
}

impl ListQuery {
    /// The grouping asked for, if any.
    pub fn group(&self) -> Result<Option<AlertGroupBy>, PageError> {
        match self.group.trim() {
            "" => Ok(None),
            g => view::GROUPINGS
                .iter()
                .find(|(key, _, _)| *key == g)
                .map(|(_, _, by)| Some(*by))
                .ok_or_else(|| PageError::BadRequest(format!("cannot group by {g:?}"))),
        }
    }

    /// The catalog filter of this query at `now` (no paging; focus businesses first).
    pub fn filter(&self, me: &Session, now: i64) -> Result<AlertFilter, PageError> {
        let mut first: Vec<i64> = focus_of(me).into_iter().collect();
        first.sort_unstable();
        let text = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
        Ok(AlertFilter {
            open: false,
            rule: text(&self.rule),
            business: self.business()?,
            host: text(&self.host),
            limit: Some(PAGE_ROWS),
            offset: 0,
            state: self.state.catalog(),
            now_ms: now,
            first_businesses: first,
            held_by: text(&self.held_by),
            max_id: None,
        })
    }

    /// The filter as query fields (state, rule, business, host, cause), for links, pagers and
    /// the bulk form; `group` is not among them.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("state", self.state.name().to_string())];
        for (k, v) in [
            ("rule", &self.rule),
            ("business", &self.business),
            ("host", &self.host),
            ("held_by", &self.held_by),
        ] {
            if !v.trim().is_empty() {
                out.push((k, v.trim().to_string()));
            }
        }
        out
    }

    /// The business filter: none when empty, else an integer.
    pub fn business(&self) -> Result<Option<i64>, PageError> {
        match self.business.trim() {
            "" => Ok(None),
            b => b
                .parse()
                .map(Some)
                .map_err(|_| PageError::BadRequest(format!("business {b:?} is not a number"))),
        }
    }
}

/// The page of the alert list to show (1-based), the number of pages and the offset of its
/// first row, for a requested `page` (1 when none) and `total` matching alerts (a count, not
/// negative): at least one page, the page within them, the offset `(page - 1) * PAGE_ROWS`.
pub fn list_page(page: Option<i64>, total: i64) -> (i64, i64, i64) {
    let total = total.max(0);
    // div_ceil without the overflow of `total + PAGE_ROWS - 1`.
    let pages = (total / PAGE_ROWS + i64::from(total % PAGE_ROWS != 0)).max(1);
    let page = page.unwrap_or(1).clamp(1, pages);
    (page, pages, (page - 1) * PAGE_ROWS)
}

/// `GET /alerts`: the compact list, or with `group` the grouped view ([`view`]).
pub async fn list(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
    Query(q): Query<ListQuery>,
) -> Result<Html<String>, PageError> {
    let body = match q.group()? {
        Some(by) => view::groups(&s, &me, &q, by).await?,
        None => view::list(&s, &me, &q).await?,
    };
    Ok(Html(layout("Alerts", "/alerts", Some(&me), &body)))
}

fn action_forms(me: &Session, id: i64, st: StateFilter) -> String {
    let mut o = String::new();
    if st == StateFilter::Open {
        let _ = write!(
            o,
            "<form method=\"post\" action=\"/alerts/{id}/ack\" class=\"inline\">{c}\
             <label class=\"sr\" for=\"ack-c-{id}\">Comment</label>\
             <input id=\"ack-c-{id}\" name=\"comment\" placeholder=\"comment\" size=\"12\" maxlength=\"500\">\
             <button type=\"submit\" name=\"ack\">Ack</button></form> ",
            c = csrf_field(me)
        );
    }
    let _ = write!(
        o,
        "<form method=\"post\" action=\"/alerts/{id}/silence\" class=\"inline\">{c}\
         <label for=\"sil-h-{id}\" class=\"sr\">Hours</label>\
         <select id=\"sil-h-{id}\" name=\"hours\"><option value=\"1\">1 h</option><option value=\"4\">4 h</option><option value=\"24\" selected>24 h</option><option value=\"168\">7 days</option></select>\
         <label class=\"sr\" for=\"sil-c-{id}\">Comment</label>\
         <input id=\"sil-c-{id}\" name=\"comment\" placeholder=\"comment\" size=\"10\" maxlength=\"500\">\
         <button type=\"submit\" class=\"secondary\">Silence</button></form>",
        c = csrf_field(me)
    );
    o
}

async fn find(s: &AppState, id: i64) -> Result<Alert, PageError> {
    s.catalog.alert(id).await?.ok_or(PageError::NotFound)
}

/// `GET /alerts/{id}`: the alert and its instance's latest 480 backups.
pub async fn detail(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
    Path(id): Path<i64>,
) -> Result<Html<String>, PageError> {
    let a = find(&s, id).await?;
    let now = s.clock.now_ms();
    let st = state_of(&a, now);
    let mut o = String::new();
    let _ = write!(
        o,
        "<div class=\"card\"><p><b>{rule}</b> on <code>{subj}</code> — <span class=\"pill {cls}\">{st}</span></p>\
         <p class=\"wrap\">{msg}</p><p class=\"muted\">Opened {opened}, updated {upd}{acked}{sil}{res}</p>",
        rule = esc(&a.rule),
        subj = esc(&a.subject),
        cls = if st == StateFilter::Open { "bad" } else { "muted" },
        st = st.name(),
        msg = esc(&a.message),
        opened = time(a.opened_ms),
        upd = time(a.updated_ms),
        acked = a.acked_ms.map(|t| format!(", acknowledged by {} at {}", esc(a.acked_by.as_deref().unwrap_or("?")), time(t))).unwrap_or_default(),
        sil = a.silenced_until_ms.filter(|t| *t > now).map(|t| format!(", silenced until {}", time(t))).unwrap_or_default(),
        res = a.resolved_ms.map(|t| format!(", resolved {}", time(t))).unwrap_or_default(),
    );
    if me.user.role >= Role::Operator && st != StateFilter::Resolved {
        o.push_str(&action_forms(&me, a.id, st));
    }
    if let Some(c) = &a.held_by {
        let _ = write!(
            o,
            "<p id=\"held-by\">Held under <code>{}</code>: notified through its cause, not on its own.</p>",
            esc(c)
        );
    }
    o.push_str("</div>");
    // A cause (a node or an agent down) lists the alerts it holds.
    let cause = crate::alerts::cause_of(&a.rule, &a.subject);
    let held = AlertFilter {
        open: true,
        limit: Some(PAGE_ROWS),
        now_ms: now,
        held_by: Some(cause.clone()),
        ..AlertFilter::default()
    };
    let n_held = s.catalog.count_alerts(&held).await?;
    if n_held > 0 {
        let _ = write!(
            o,
            "<h2 id=\"held\">Holds {n_held} alert(s)</h2><p><a href=\"/alerts?state=all&amp;held_by={}\">List all {n_held}</a></p><ul class=\"held\">",
            url(&cause)
        );
        for h in s.catalog.alerts(&held).await? {
            let _ = write!(
                o,
                "<li><a href=\"/alerts/{}\">{} {}</a></li>",
                h.id,
                esc(&h.rule),
                esc(&h.subject)
            );
        }
        o.push_str("</ul>");
    }
    if let (Some(server), Some(ty), Some(inst)) = (&a.server_id, &a.back_type, a.instance) {
        let key = InstanceKey::new(server, ty, inst);
        let rows = s
            .catalog
            .history(
                &key,
                Page {
                    offset: 0,
                    limit: HISTORY_ROWS,
                },
            )
            .await?;
        let _ = write!(
            o,
            "<h2>Latest {} backups of <a href=\"/instances/{}/{}/{}\">{}</a></h2>",
            rows.len(),
            url(&key.server_id),
            url(&key.type_key),
            key.instance,
            esc(&key.subject())
        );
        o.push_str(&backups_table(&key, &rows));
    }
    Ok(Html(layout(
        &format!("Alert {}", a.id),
        "/alerts",
        Some(&me),
        &o,
    )))
}

/// Ack and silence forms.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    pub(crate) comment: String,
    #[serde(default)]
    pub(crate) hours: Option<i64>,
}

/// Longest silence (hours): 90 days.
pub const MAX_SILENCE_HOURS: i64 = crate::validate::MAX_SILENCE_MS / 3_600_000;

/// Longest comment kept (characters).
pub const MAX_COMMENT_CHARS: usize = 500;

impl ActionForm {
    /// How long a silence lasts: 24 h when not given, else 1 to [`MAX_SILENCE_HOURS`].
    pub fn silence_hours(&self) -> Result<i64, PageError> {
        let hours = self.hours.unwrap_or(24);
        if !(1..=MAX_SILENCE_HOURS).contains(&hours) {
            return Err(PageError::BadRequest(format!(
                "silence for 1 hour to {} days",
                MAX_SILENCE_HOURS / 24
            )));
        }
        Ok(hours)
    }

    /// The comment as audited: at most [`MAX_COMMENT_CHARS`] characters.
    pub fn comment(&self) -> String {
        self.comment.chars().take(MAX_COMMENT_CHARS).collect()
    }
}

/// `POST /alerts/{id}/ack`.
pub async fn ack(
    State(s): State<AppState>,
    PageOperator(me): PageOperator,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> Result<Response, PageError> {
    let now = s.clock.now_ms();
    if !s.catalog.ack_alert(id, &me.user.name, now).await? {
        return Err(PageError::NotFound);
    }
    let comment = f.comment();
    s.catalog
        .audit(
            now,
            &me.user.name,
            "alert.ack",
            &serde_json::json!({"id": id, "comment": comment}).to_string(),
        )
        .await?;
    Ok(notice::redirect(
        "/alerts",
        Notice::AlertAcked,
        u64::try_from(id).ok(),
    ))
}

/// `POST /alerts/{id}/silence`.
pub async fn silence(
    State(s): State<AppState>,
    PageOperator(me): PageOperator,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> Result<Response, PageError> {
    let hours = f.silence_hours()?;
    let now = s.clock.now_ms();
    let until = now + hours * 3_600_000;
    if !s.catalog.silence_alert(id, until, &me.user.name).await? {
        return Err(PageError::NotFound);
    }
    let comment = f.comment();
    s.catalog
        .audit(
            now,
            &me.user.name,
            "alert.silence",
            &serde_json::json!({"id": id, "until_ms": until, "comment": comment}).to_string(),
        )
        .await?;
    Ok(notice::redirect(
        "/alerts",
        Notice::AlertSilenced,
        u64::try_from(id).ok(),
    ))
}

/// `GET /alerts/feed`: open, unacknowledged alerts with a focus flag (the page's poller).
pub async fn feed(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
) -> Result<Json<serde_json::Value>, PageError> {
    let now = s.clock.now_ms();
    let focus = focus_of(&me);
    let mut first: Vec<i64> = focus.iter().copied().collect();
    first.sort_unstable();
    // Bounded: the newest open alerts, focus businesses first (the ones that notify).
    let f = AlertFilter {
        state: Some(AlertState::Open),
        now_ms: now,
        limit: Some(FEED_ROWS),
        first_businesses: first,
        ..AlertFilter::default()
    };
    let v: Vec<serde_json::Value> = s
        .catalog
        .alerts(&f)
        .await?
        .into_iter()
        .map(|a| {
            serde_json::json!({
                "id": a.id, "rule": a.rule, "subject": a.subject, "message": a.message,
                "focus": a.game_id.is_some_and(|g| focus.contains(&g)),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "alerts": v })))
}
