//! The alert list's two views, as askama templates (`indexer/templates/alerts/`): compact
//! one-line rows with a selection for bulk actions, and groups (by rule, business, host or
//! cause) with counts, each opening on its newest alerts (fetched from `/alerts/samples` when
//! opened). The list is two catalog queries and the grouped view one, whatever the number of
//! open alerts.

use std::collections::HashMap;

use askama::Template;

use super::{list_page, state_of, ListQuery, StateFilter, PAGE_ROWS};
use crate::catalog::{Alert, AlertGroupBy, Business, Role};
use crate::http::AppState;
use crate::web::errors::PageError;
use crate::web::html::url;
use crate::web::notice;
use crate::web::session::Session;

/// The groupings: query key, label, catalog grouping.
pub const GROUPINGS: [(&str, &str, AlertGroupBy); 4] = [
    ("rule", "rule", AlertGroupBy::Rule),
    ("business", "business", AlertGroupBy::Business),
    ("host", "host", AlertGroupBy::Host),
    ("cause", "cause (node or agent down)", AlertGroupBy::Cause),
];

/// Groups per page of the grouped view.
pub const GROUP_ROWS: i64 = 100;

/// Alerts shown inside an opened group (fetched when it opens: the grouped page itself is one
/// catalog pass whatever the number of alerts).
pub const GROUP_SAMPLES: i64 = 5;

/// One tab above the alert views.
pub struct Tab {
    pub(super) href: String,
    pub(super) label: &'static str,
    pub(super) current: bool,
}

/// The tabs: the list, each grouping (keeping the filter), and the silences.
pub fn tabs(q: Option<&ListQuery>, current: &str) -> Vec<Tab> {
    let keep = q.map(|q| query_string(&q.fields())).unwrap_or_default();
    let mut out = vec![Tab {
        href: if keep.is_empty() {
            "/alerts".into()
        } else {
            format!("/alerts?{keep}")
        },
        label: "List",
        current: current.is_empty(),
    }];
    for (key, _, _) in GROUPINGS {
        out.push(Tab {
            href: format!(
                "/alerts?{}group={key}",
                if keep.is_empty() {
                    String::new()
                } else {
                    format!("{keep}&")
                }
            ),
            label: match key {
                "rule" => "By rule",
                "business" => "By business",
                "host" => "By host",
                _ => "By cause",
            },
            current: current == key,
        });
    }
    out.push(Tab {
        href: "/alerts/silences".into(),
        label: "Silences",
        current: current == "silences",
    });
    out
}

/// `k=v&k=v`, percent-encoded.
pub fn query_string(fields: &[(&str, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", url(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A business in the filter's list.
pub struct BusinessOption {
    id: i64,
    label: String,
    selected: bool,
}

/// What the filter form shows.
struct Filters {
    states: Vec<&'static str>,
    state: &'static str,
    rules: Vec<String>,
    rule: String,
    businesses: Vec<BusinessOption>,
    host: String,
    held_by: String,
    groupings: Vec<(&'static str, &'static str)>,
    group: String,
}

async fn filters(
    s: &AppState,
    me: &Session,
    q: &ListQuery,
    all: &[Business],
) -> Result<Filters, PageError> {
    let focus = super::focus_of(me);
    let business = q.business()?;
    let mut rules: Vec<String> = s
        .catalog
        .open_alert_rules()
        .await?
        .into_iter()
        .chain(crate::alerts::RULES.iter().map(|r| r.to_string()))
        .collect();
    rules.sort();
    rules.dedup();
    Ok(Filters {
        states: StateFilter::ALL.iter().map(|s| s.name()).collect(),
        state: q.state.name(),
        rules,
        rule: q.rule.trim().to_string(),
        businesses: all
            .iter()
            .map(|b| BusinessOption {
                id: b.business_id,
                label: format!(
                    "{} ({}){}",
                    b.name,
                    b.business_id,
                    if focus.contains(&b.business_id) {
                        " ★"
                    } else {
                        ""
                    }
                ),
                selected: Some(b.business_id) == business,
            })
            .collect(),
        host: q.host.trim().to_string(),
        held_by: q.held_by.trim().to_string(),
        groupings: GROUPINGS.iter().map(|(k, l, _)| (*k, *l)).collect(),
        group: q.group.trim().to_string(),
    })
}

/// A business as the pages name it: "Name (id)", or the id alone when unregistered.
pub fn business_label(names: &HashMap<i64, &str>, id: Option<i64>) -> String {
    match id {
        None => String::new(),
        Some(id) => match names.get(&id) {
            Some(n) => format!("{n} ({id})"),
            None => id.to_string(),
        },
    }
}

/// Previous / next links keeping the filter (and the grouping).
fn pager(q: &ListQuery, page: i64, pages: i64, what: &str) -> String {
    if pages <= 1 {
        return String::new();
    }
    let mut fields = q.fields();
    if !q.group.trim().is_empty() {
        fields.push(("group", q.group.trim().to_string()));
    }
    let keep = query_string(&fields);
    let link = |p: i64| format!("/alerts?{}&amp;page={p}", keep.replace('&', "&amp;"));
    let mut o = format!("<nav class=\"pager\" aria-label=\"{what} pages\">");
    if page > 1 {
        o.push_str(&format!(
            "<a href=\"{}\" rel=\"prev\">← Previous</a> ",
            link(page - 1)
        ));
    }
    o.push_str(&format!("<span>Page {page} of {pages}</span>"));
    if page < pages {
        o.push_str(&format!(
            " <a href=\"{}\" rel=\"next\">Next →</a>",
            link(page + 1)
        ));
    }
    o.push_str("</nav>");
    o
}

/// One row of the compact list.
struct Row {
    id: i64,
    focus: bool,
    rule: String,
    subject: String,
    business: String,
    host: String,
    message: String,
    opened_ms: i64,
    state: &'static str,
    /// Not resolved: a bulk action can take it.
    actionable: bool,
    acked_by: Option<String>,
    held_by: Option<String>,
}

#[derive(Template)]
#[template(path = "alerts/list.html")]
struct ListPage {
    notice: String,
    tabs: Vec<Tab>,
    filters: Filters,
    total: i64,
    can_write: bool,
    csrf: String,
    hidden: Vec<(&'static str, String)>,
    pager: String,
    rows: Vec<Row>,
}

/// The compact list's body.
pub async fn list(s: &AppState, me: &Session, q: &ListQuery) -> Result<String, PageError> {
    let now = s.clock.now_ms();
    let mut f = q.filter(me, now)?;
    let total = s.catalog.count_alerts(&f).await?;
    let (page, pages, offset) = list_page(q.page, total);
    f.offset = offset;
    f.limit = Some(PAGE_ROWS);
    let alerts = s.catalog.alerts(&f).await?;
    let all = s.catalog.businesses().await?;
    let names: HashMap<i64, &str> = all
        .iter()
        .map(|b| (b.business_id, b.name.as_str()))
        .collect();
    let focus = super::focus_of(me);
    let fl = filters(s, me, q, &all).await?;
    let rows = alerts
        .iter()
        .map(|a: &Alert| {
            let st = state_of(a, now);
            Row {
                id: a.id,
                focus: a.game_id.is_some_and(|g| focus.contains(&g)),
                rule: a.rule.clone(),
                subject: a.subject.clone(),
                business: business_label(&names, a.game_id),
                host: a.game_server_ip.clone().unwrap_or_default(),
                message: a.message.clone(),
                opened_ms: a.opened_ms,
                state: st.name(),
                actionable: st != StateFilter::Resolved,
                acked_by: a.acked_by.clone(),
                held_by: a.held_by.clone(),
            }
        })
        .collect();
    let page = ListPage {
        notice: notice::html(&q.done, &q.n, None),
        tabs: tabs(Some(q), ""),
        filters: fl,
        total,
        can_write: me.user.role >= Role::Operator,
        csrf: me.csrf.clone(),
        hidden: q.fields(),
        pager: pager(q, page, pages, "Alert"),
        rows,
    };
    Ok(page.render()?)
}

/// One group of the grouped view.
struct GroupView {
    key: String,
    label: String,
    count: i64,
    newest_ms: i64,
    /// The list of this group (none for the group of alerts without a key).
    list_href: Option<String>,
    /// The filter fields of this group, for its bulk buttons.
    fields: Vec<(&'static str, String)>,
    /// Where `app.js` fetches the group's newest alerts when it is opened.
    samples_href: Option<String>,
}

#[derive(Template)]
#[template(path = "alerts/groups.html")]
struct GroupsPage {
    notice: String,
    tabs: Vec<Tab>,
    filters: Filters,
    groups: Vec<GroupView>,
    group_label: &'static str,
    group_total: i64,
    total: i64,
    can_write: bool,
    csrf: String,
    pager: String,
}

/// The query field that narrows a filter to one group.
fn group_field(by: AlertGroupBy) -> &'static str {
    match by {
        AlertGroupBy::Rule => "rule",
        AlertGroupBy::Business => "business",
        AlertGroupBy::Host => "host",
        AlertGroupBy::Cause => "held_by",
    }
}

/// The grouped view's body.
pub async fn groups(
    s: &AppState,
    me: &Session,
    q: &ListQuery,
    by: AlertGroupBy,
) -> Result<String, PageError> {
    let now = s.clock.now_ms();
    let f = q.filter(me, now)?;
    let page = q.page.unwrap_or(1).max(1);
    let found = s
        .catalog
        .alert_groups(&f, by, GROUP_ROWS, (page - 1).saturating_mul(GROUP_ROWS))
        .await?;
    let (total, group_total) = (found.alert_count, found.group_count);
    let pages = (group_total / GROUP_ROWS + i64::from(group_total % GROUP_ROWS != 0)).max(1);
    let all = s.catalog.businesses().await?;
    let names: HashMap<i64, &str> = all
        .iter()
        .map(|b| (b.business_id, b.name.as_str()))
        .collect();
    let field = group_field(by);
    let groups = found
        .groups
        .into_iter()
        .map(|g| {
            let label = match (by, g.key.as_str()) {
                (AlertGroupBy::Business, "") => "(no business)".to_string(),
                (AlertGroupBy::Host, "") => "(no host)".to_string(),
                (AlertGroupBy::Cause, "") => "(not held)".to_string(),
                (AlertGroupBy::Business, k) => business_label(&names, k.parse().ok()),
                (_, k) => k.to_string(),
            };
            // The group's own filter: the page's, narrowed to the group's key.
            let fields: Vec<(&'static str, String)> = if g.key.is_empty() {
                Vec::new()
            } else {
                q.fields()
                    .into_iter()
                    .filter(|(k, _)| *k != field)
                    .chain([(field, g.key.clone())])
                    .collect()
            };
            let keep = query_string(&fields);
            GroupView {
                list_href: (!fields.is_empty()).then(|| format!("/alerts?{keep}")),
                samples_href: (!fields.is_empty()).then(|| format!("/alerts/samples?{keep}")),
                key: g.key,
                label,
                count: g.count,
                newest_ms: g.newest_ms,
                fields,
            }
        })
        .collect();
    let fl = filters(s, me, q, &all).await?;
    let label = GROUPINGS
        .iter()
        .find(|(_, _, b)| *b == by)
        .map(|(_, l, _)| *l)
        .unwrap_or("rule");
    let page_html = GroupsPage {
        notice: notice::html(&q.done, &q.n, None),
        tabs: tabs(Some(q), q.group.trim()),
        filters: fl,
        groups,
        group_label: label,
        group_total,
        total,
        can_write: me.user.role >= Role::Operator,
        csrf: me.csrf.clone(),
        pager: pager(q, page.min(pages), pages, "Group"),
    };
    Ok(page_html.render()?)
}

/// `GET /alerts/samples`: the newest alerts of a filter (an opened group), as JSON for
/// `app.js`, which puts them in the page as text.
pub async fn samples(
    axum::extract::State(s): axum::extract::State<AppState>,
    crate::web::session::PageViewer(me): crate::web::session::PageViewer,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> Result<axum::Json<serde_json::Value>, PageError> {
    let mut f = q.filter(&me, s.clock.now_ms())?;
    f.limit = Some(GROUP_SAMPLES);
    f.first_businesses.clear();
    let v: Vec<serde_json::Value> = s
        .catalog
        .alerts(&f)
        .await?
        .into_iter()
        .map(|a| {
            serde_json::json!({"id": a.id, "rule": a.rule, "subject": a.subject, "message": a.message})
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "alerts": v })))
}
