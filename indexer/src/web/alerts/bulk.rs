//! Bulk actions on alerts (acknowledge, silence, end a silence) for a selection or for every
//! alert a filter matches, each through one confirmation page that counts what will change;
//! and the silences page, where a silence in force is ended.
//!
//! A confirmation records the highest alert id when it counted: the confirmed action takes
//! only alerts up to it, so alerts opened between the count and the click are left alone.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::view::{query_string, tabs, Tab};
use super::{ActionForm, ListQuery, StateFilter, MAX_COMMENT_CHARS};
use crate::catalog::{BulkAction, Role, MAX_BULK_IDS};
use crate::http::AppState;
use crate::web::errors::PageError;
use crate::web::html::{layout, url};
use crate::web::notice::{self, Notice};
use crate::web::session::{PageOperator, PageViewer};

/// Whether a bulk form acts on the ticked alerts or on every alert its filter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The `id` fields.
    Selected,
    /// Every alert the filter matches.
    Filter,
}

/// What a bulk form asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Acknowledge.
    Ack,
    /// Silence for some hours.
    Silence,
    /// End silences.
    Unsilence,
}

/// A bulk form, as posted (urlencoded, `id` repeated; read by hand because serde's form
/// decoding takes no repeated keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkForm {
    /// The action.
    pub verb: Verb,
    /// Selection or filter.
    pub scope: Scope,
    /// The ticked alerts (scope `selected`).
    pub ids: Vec<i64>,
    /// Silence length (hours), for `silence`.
    pub hours: Option<i64>,
    /// The comment, audited.
    pub comment: String,
    /// The filter: state, rule, business, host, cause.
    pub query: ListQueryFields,
    /// The bound the confirmation page counted up to.
    pub max_id: Option<i64>,
    /// Sent from the confirmation page.
    pub confirmed: bool,
}

/// The filter fields of a bulk form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQueryFields {
    state: String,
    rule: String,
    business: String,
    host: String,
    held_by: String,
}

fn bad(msg: impl Into<String>) -> PageError {
    PageError::BadRequest(msg.into())
}

impl BulkForm {
    /// Reads a posted body. Refuses an unknown action or scope, a bad id, more than
    /// [`MAX_BULK_IDS`] ids, or a selection without ids.
    pub fn parse(body: &[u8]) -> Result<BulkForm, PageError> {
        let mut verb = None;
        let mut scope = None;
        let mut ids = Vec::new();
        let mut hours = None;
        let mut comment = String::new();
        let mut query = ListQueryFields::default();
        let mut max_id = None;
        let mut confirmed = false;
        for (k, v) in form_urlencoded::parse(body) {
            let int = |what: &str| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| bad(format!("{what} {v:?} is not a number")))
            };
            match &*k {
                "action" => {
                    verb = Some(match &*v {
                        "ack" => Verb::Ack,
                        "silence" => Verb::Silence,
                        "unsilence" => Verb::Unsilence,
                        other => return Err(bad(format!("unknown action {other:?}"))),
                    })
                }
                "scope" => {
                    scope = Some(match &*v {
                        "selected" => Scope::Selected,
                        "filter" => Scope::Filter,
                        other => return Err(bad(format!("unknown scope {other:?}"))),
                    })
                }
                "id" => {
                    if ids.len() == MAX_BULK_IDS {
                        return Err(bad(format!(
                            "at most {MAX_BULK_IDS} alerts at once; act on the filter instead"
                        )));
                    }
                    ids.push(int("alert id")?);
                }
                "hours" if !v.trim().is_empty() => hours = Some(int("hours")?),
                "comment" => comment = v.chars().take(MAX_COMMENT_CHARS).collect(),
                "max_id" => max_id = Some(int("max_id")?),
                "confirmed" => confirmed = v == "1",
                "state" => query.state = v.into_owned(),
                "rule" => query.rule = v.into_owned(),
                "business" => query.business = v.into_owned(),
                "host" => query.host = v.into_owned(),
                "held_by" => query.held_by = v.into_owned(),
                _ => {}
            }
        }
        let verb = verb.ok_or_else(|| bad("no action"))?;
        let scope = scope.ok_or_else(|| bad("no scope (selected or filter)"))?;
        if scope == Scope::Selected && ids.is_empty() {
            return Err(bad(
                "no alert selected: tick some, or act on all that match",
            ));
        }
        if scope == Scope::Filter {
            ids.clear();
        }
        Ok(BulkForm {
            verb,
            scope,
            ids,
            hours,
            comment,
            query,
            max_id,
            confirmed,
        })
    }

    /// The filter as a list query.
    pub fn list_query(&self) -> Result<ListQuery, PageError> {
        let state = match self.query.state.trim() {
            "" => StateFilter::Open,
            s => StateFilter::ALL
                .into_iter()
                .find(|f| f.name() == s)
                .ok_or_else(|| bad(format!("unknown state {s:?}")))?,
        };
        Ok(ListQuery {
            state,
            rule: self.query.rule.clone(),
            business: self.query.business.clone(),
            host: self.query.host.clone(),
            held_by: self.query.held_by.clone(),
            ..ListQuery::default()
        })
    }

    /// The catalog action at `now`.
    pub fn action(&self, now: i64) -> Result<BulkAction, PageError> {
        Ok(match self.verb {
            Verb::Ack => BulkAction::Ack,
            Verb::Unsilence => BulkAction::Unsilence,
            Verb::Silence => {
                let hours = ActionForm {
                    comment: String::new(),
                    hours: self.hours,
                }
                .silence_hours()?;
                BulkAction::Silence {
                    until_ms: now.saturating_add(hours.saturating_mul(3_600_000)),
                }
            }
        })
    }

    /// The fields the confirmation page posts back (with `max_id` and `confirmed` added).
    fn fields(&self, q: &ListQuery) -> Vec<(&'static str, String)> {
        let mut out = q.fields();
        out.push((
            "action",
            match self.verb {
                Verb::Ack => "ack",
                Verb::Silence => "silence",
                Verb::Unsilence => "unsilence",
            }
            .into(),
        ));
        out.push((
            "scope",
            match self.scope {
                Scope::Selected => "selected",
                Scope::Filter => "filter",
            }
            .into(),
        ));
        if let Some(h) = self.hours {
            out.push(("hours", h.to_string()));
        }
        if !self.comment.is_empty() {
            out.push(("comment", self.comment.clone()));
        }
        out.extend(self.ids.iter().map(|id| ("id", id.to_string())));
        out
    }
}

#[derive(Template)]
#[template(path = "alerts/confirm.html")]
struct ConfirmPage {
    count: i64,
    verb: &'static str,
    verb_cap: &'static str,
    until_ms: Option<i64>,
    scope_text: &'static str,
    describe: String,
    comment: String,
    csrf: String,
    fields: Vec<(&'static str, String)>,
    max_id: i64,
    back: String,
}

/// The filter in words, for the confirmation page.
fn describe(q: &ListQuery) -> String {
    let mut parts = vec![format!("{} alerts", q.state.name())];
    for (label, v) in [
        ("rule", &q.rule),
        ("business", &q.business),
        ("host", &q.host),
        ("held under", &q.held_by),
    ] {
        if !v.trim().is_empty() {
            parts.push(format!("{label} {}", v.trim()));
        }
    }
    parts.join(", ")
}

/// `POST /alerts/bulk`: without `confirmed`, the confirmation page with the count of alerts
/// the action would change; with it, the action on those (up to `max_id`), one audit entry,
/// and back to the list with the number changed.
pub async fn bulk(
    State(s): State<AppState>,
    PageOperator(me): PageOperator,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let form = BulkForm::parse(&body)?;
    let q = form.list_query()?;
    let now = s.clock.now_ms();
    let mut f = q.filter(&me, now)?;
    let action = form.action(now)?;
    let ids = (form.scope == Scope::Selected).then_some(form.ids.as_slice());
    let back = format!("/alerts?{}", query_string(&q.fields()));
    let (verb, verb_cap, done) = match form.verb {
        Verb::Ack => ("acknowledge", "Acknowledge", Notice::AlertsAcked),
        Verb::Silence => ("silence", "Silence", Notice::AlertsSilenced),
        Verb::Unsilence => (
            "end the silence of",
            "End the silence of",
            Notice::AlertsUnsilenced,
        ),
    };
    if !form.confirmed {
        let max_id = s.catalog.max_alert_id().await?;
        f.max_id = Some(max_id);
        let count = s.catalog.count_bulk(&f, ids, action, now).await?;
        let page = ConfirmPage {
            count,
            verb,
            verb_cap,
            until_ms: match action {
                BulkAction::Silence { until_ms } => Some(until_ms),
                _ => None,
            },
            scope_text: match form.scope {
                Scope::Selected => "The selected alerts",
                Scope::Filter => "Every alert that matches",
            },
            describe: describe(&q),
            comment: form.comment.clone(),
            csrf: me.csrf.clone(),
            fields: form.fields(&q),
            max_id,
            back,
        }
        .render()?;
        return Ok(Html(layout("Confirm", "/alerts", Some(&me), &page)).into_response());
    }
    f.max_id = Some(
        form.max_id
            .ok_or_else(|| bad("the confirmation carries no max_id; start again"))?,
    );
    let changed = s
        .catalog
        .bulk_alerts(&f, ids, action, &me.user.name, now)
        .await?;
    s.catalog
        .audit(
            now,
            &me.user.name,
            match form.verb {
                Verb::Ack => "alert.bulk_ack",
                Verb::Silence => "alert.bulk_silence",
                Verb::Unsilence => "alert.bulk_unsilence",
            },
            &serde_json::json!({
                "filter": q.fields().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                "ids": form.ids,
                "max_id": f.max_id,
                "changed": changed,
                "until_ms": match action { BulkAction::Silence { until_ms } => Some(until_ms), _ => None },
                "comment": form.comment,
            })
            .to_string(),
        )
        .await?;
    Ok(Redirect::to(&format!("{back}&done={}&n={changed}", done.key())).into_response())
}

/// One silence on the silences page.
struct SilenceRow {
    rule: String,
    by: String,
    until_ms: i64,
    count: i64,
    list_href: String,
}

#[derive(Template)]
#[template(path = "alerts/silences.html")]
struct SilencesPage {
    notice: String,
    tabs: Vec<Tab>,
    rows: Vec<SilenceRow>,
    can_write: bool,
    csrf: String,
}

/// Silences listed at most.
pub const SILENCE_ROWS: i64 = 1000;

/// `GET /alerts/silences`.
pub async fn silences(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
    Query(n): Query<notice::NoticeQuery>,
) -> Result<Html<String>, PageError> {
    let now = s.clock.now_ms();
    let rows = s
        .catalog
        .silences(now, SILENCE_ROWS)
        .await?
        .into_iter()
        .map(|g| SilenceRow {
            list_href: format!("/alerts?state=silenced&rule={}", url(&g.rule)),
            rule: g.rule,
            by: g.silenced_by,
            until_ms: g.until_ms,
            count: g.count,
        })
        .collect();
    let body = SilencesPage {
        notice: notice::html(&n.done, &n.n, None),
        tabs: tabs(None, "silences"),
        rows,
        can_write: me.user.role >= Role::Operator,
        csrf: me.csrf.clone(),
    }
    .render()?;
    Ok(Html(layout("Silences", "/alerts", Some(&me), &body)))
}

/// The form that ends one silence.
#[derive(Debug, Deserialize)]
pub struct CancelForm {
    rule: String,
    #[serde(default)]
    by: String,
    until_ms: i64,
}

/// `POST /alerts/silences/cancel`.
pub async fn cancel_silence(
    State(s): State<AppState>,
    PageOperator(me): PageOperator,
    Form(f): Form<CancelForm>,
) -> Result<Response, PageError> {
    let now = s.clock.now_ms();
    let n = s
        .catalog
        .cancel_silence(&f.rule, &f.by, f.until_ms, now)
        .await?;
    s.catalog
        .audit(
            now,
            &me.user.name,
            "alert.silence_cancel",
            &serde_json::json!({"rule": f.rule, "silenced_by": f.by, "until_ms": f.until_ms, "changed": n})
                .to_string(),
        )
        .await?;
    Ok(notice::redirect(
        "/alerts/silences",
        Notice::SilenceEnded,
        Some(n),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_form_reads_repeated_ids_and_refuses_what_it_cannot_act_on() {
        let f = BulkForm::parse(
            b"csrf=x&action=ack&scope=selected&id=3&id=5&comment=ok&state=open&rule=overdue",
        )
        .unwrap();
        assert_eq!(f.ids, vec![3, 5]);
        assert_eq!(f.verb, Verb::Ack);
        assert_eq!(f.comment, "ok");
        assert!(!f.confirmed);
        let q = f.list_query().unwrap();
        assert_eq!(q.rule, "overdue");
        // A filter-wide action ignores ticked ids.
        let f = BulkForm::parse(b"action=silence&scope=filter&id=3&hours=4&max_id=9&confirmed=1")
            .unwrap();
        assert!(f.ids.is_empty() && f.confirmed && f.max_id == Some(9));
        assert!(matches!(
            f.action(1000).unwrap(),
            BulkAction::Silence { until_ms } if until_ms == 1000 + 4 * 3_600_000
        ));
        for bad in [
            &b"action=ack&scope=selected"[..],
            b"action=delete&scope=filter",
            b"action=ack&scope=everything",
            b"action=ack&scope=selected&id=x",
            b"scope=filter",
            b"action=ack&scope=filter&state=bogus",
            b"action=silence&scope=filter&hours=100000",
        ] {
            let r = BulkForm::parse(bad).and_then(|f| {
                f.list_query()?;
                f.action(0)
            });
            assert!(r.is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many: String = (0..=MAX_BULK_IDS)
            .map(|i| format!("id={i}&"))
            .collect::<String>()
            + "action=ack&scope=selected";
        assert!(BulkForm::parse(many.as_bytes()).is_err());
    }
}
