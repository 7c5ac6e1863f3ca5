//! Instances (search, paging, an Edit link per row, batch delete; the add/edit form and batch
//! add are in `instance_edit`), history, the chain of any backup and its restore command,
//! businesses and backup types.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::response::{Html, Response};
use axum::Form;
use serde::Deserialize;

use super::errors::PageError;
use super::html::{bytes, csrf_field, duration, esc, layout, thead, time, url};
use super::notice::{self, Notice};
use super::session::{PageOperator, PageViewer, Session};
use crate::catalog::{Backup, BackupType, Business, Instance, InstanceKey, Page, Role};
use crate::http::AppState;

/// Rows per page of the instance list.
pub const PAGE_ROWS: usize = 50;

/// Search query.
#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    pub(crate) q: String,
    #[serde(default)]
    pub(crate) field: String,
    #[serde(default)]
    pub(crate) page: usize,
    #[serde(default)]
    pub(crate) done: String,
    /// The notice's count (`web::notice`).
    #[serde(default)]
    pub(crate) n: String,
    /// The instance to edit (its Edit link): server id, type and instance.
    #[serde(default)]
    pub(crate) es: Option<String>,
    #[serde(default)]
    pub(crate) et: Option<String>,
    #[serde(default)]
    pub(crate) ei: Option<i64>,
}

impl ListQuery {
    /// The instance the query asks to edit, if it names one.
    fn edit_key(&self) -> Option<InstanceKey> {
        Some(InstanceKey::new(
            self.es.as_deref()?,
            self.et.as_deref()?,
            self.ei?,
        ))
    }
}

/// The page of the instance list to show (0-based) and the number of pages, for a requested
/// `page` and `hits` matching instances: at least one page, and the page within them.
pub fn list_page(page: usize, hits: usize) -> (usize, usize) {
    let pages = hits.div_ceil(PAGE_ROWS).max(1);
    (page.min(pages - 1), pages)
}

/// Whether `i` matches the search `q` in `field` (any field when `field` is not one of them).
pub fn matches(i: &Instance, field: &str, q: &str, biz: &HashMap<i64, String>) -> bool {
    if q.is_empty() {
        return true;
    }
    let bname = i
        .business_id
        .and_then(|b| biz.get(&b))
        .map(|s| s.to_lowercase())
        .unwrap_or_default();
    let bid = i.business_id.map(|b| b.to_string()).unwrap_or_default();
    let ql = q.to_lowercase();
    match field {
        "server_id" => i.key.server_id.to_lowercase().contains(&ql),
        "name" => i.name.to_lowercase().contains(&ql),
        "instance" => i.key.instance.to_string() == q,
        "type" => i.key.type_key == ql,
        "business" => bid == q || bname.contains(&ql),
        _ => {
            i.key.server_id.to_lowercase().contains(&ql)
                || i.name.to_lowercase().contains(&ql)
                || i.key.instance.to_string() == q
                || i.key.type_key == ql
                || bid == q
                || bname.contains(&ql)
        }
    }
}

/// `GET /instances`.
pub async fn list(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
    Query(q): Query<ListQuery>,
) -> Result<Html<String>, PageError> {
    let biz: HashMap<i64, String> = s
        .catalog
        .businesses()
        .await?
        .into_iter()
        .map(|b| (b.business_id, b.name))
        .collect();
    let all = s.catalog.instances().await?;
    let query = q.q.trim();
    let hits: Vec<&Instance> = all
        .iter()
        .filter(|i| matches(i, &q.field, query, &biz))
        .collect();
    let (pg, pages) = list_page(q.page, hits.len());
    let shown: Vec<&Instance> = hits
        .iter()
        .skip(pg * PAGE_ROWS)
        .take(PAGE_ROWS)
        .copied()
        .collect();
    let keys: Vec<crate::catalog::InstanceKey> = shown.iter().map(|i| i.key.clone()).collect();
    let health = crate::alerts::instance_states_of(s.catalog.as_ref(), &keys).await?;
    let can_write = me.user.role >= Role::Operator;
    let mut o = String::with_capacity(PAGE_ROWS * 600 + 4096);
    o.push_str(&notice::html(&q.done, &q.n, None));
    o.push_str(
        "<form method=\"get\" class=\"filters\" role=\"search\" aria-label=\"Search instances\">",
    );
    let _ = write!(
        o,
        "<div><label for=\"q\">Search</label><input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" placeholder=\"server id, name, instance…\"></div>",
        esc(query)
    );
    o.push_str("<div><label for=\"field\">In</label><select id=\"field\" name=\"field\">");
    for (v, l) in [
        ("", "any field"),
        ("server_id", "server id"),
        ("name", "name"),
        ("instance", "instance"),
        ("type", "type"),
        ("business", "business"),
    ] {
        let sel = if v == q.field { " selected" } else { "" };
        let _ = write!(o, "<option value=\"{v}\"{sel}>{l}</option>");
    }
    o.push_str("</select></div><button type=\"submit\">Search</button></form>");
    let _ = write!(
        o,
        "<p class=\"muted\"><b id=\"hits\">{}</b> of {} instances; page {} of {pages}.</p>",
        hits.len(),
        all.len(),
        pg + 1
    );
    if can_write {
        let _ = write!(
            o,
            "<form method=\"post\" action=\"/instances/delete\" id=\"delete-form\" data-confirm=\"Delete the selected instances from the registry?\">{}",
            csrf_field(&me)
        );
    }
    o.push_str("<div class=\"scroll\"><table id=\"instances\">");
    let head: &[&str] = if can_write {
        &[
            "<input type=\"checkbox\" id=\"select-all\" aria-label=\"Select all on this page\">",
            "Server id",
            "State",
            "Type",
            "Instance",
            "Name",
            "Business",
            "Period",
            "Enabled",
            "Registered",
        ]
    } else {
        &[
            "Server id",
            "State",
            "Type",
            "Instance",
            "Name",
            "Business",
            "Period",
            "Enabled",
            "Registered",
        ]
    };
    o.push_str(&thead(head));
    o.push_str("<tbody>");
    for i in &shown {
        let k = &i.key;
        let kv = format!("{}\t{}\t{}", k.server_id, k.type_key, k.instance);
        o.push_str("<tr>");
        if can_write {
            // The Edit link sits by the checkbox, in the first column: on a phone the table
            // scrolls sideways and a last column would be off-screen.
            let _ = write!(
                o,
                "<td class=\"pick\"><input type=\"checkbox\" name=\"key\" value=\"{}\" aria-label=\"Select {}\"> \
                 <a class=\"edit\" href=\"{}\" aria-label=\"Edit {}\">Edit</a></td>",
                esc(&kv),
                esc(&k.subject()),
                esc(&format!(
                    "/instances?q={}&field={}&page={pg}&es={}&et={}&ei={}#add-form",
                    url(query),
                    url(&q.field),
                    url(&k.server_id),
                    url(&k.type_key),
                    k.instance
                )),
                esc(&k.subject())
            );
        }
        let _ = write!(
            o,
            "<td><a href=\"/instances/{}/{}/{}\">{}</a></td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            url(&k.server_id),
            url(&k.type_key),
            k.instance,
            esc(&k.server_id),
            // First after the id: on a phone the table scrolls sideways, and this is what an
            // operator looks for.
            match health.of(i) {
                crate::alerts::InstanceHealth::Overdue => "<span class=\"bad\">overdue</span>",
                h => h.label(),
            },
            esc(&k.type_key),
            k.instance,
            esc(&i.name),
            i.business_id
                .map(|b| format!("{} {}", b, esc(biz.get(&b).map(String::as_str).unwrap_or(""))))
                .unwrap_or_default(),
            i.interval_secs.map(|s| format!("{s} s")).unwrap_or_default(),
            if i.enabled { "yes" } else { "<span class=\"warn\">no</span>" },
            time(i.created_ms),
        );
    }
    o.push_str("</tbody></table></div>");
    if can_write {
        o.push_str("<p><button type=\"submit\" class=\"danger\" id=\"delete-selected\">Delete selected</button></p></form>");
    }
    let link = |p: usize| {
        format!(
            "/instances?q={}&field={}&page={p}",
            url(query),
            url(&q.field)
        )
    };
    o.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    if pg > 0 {
        let _ = write!(
            o,
            "<a href=\"{}\" rel=\"prev\">← Previous</a>",
            esc(&link(pg - 1))
        );
    }
    if pg + 1 < pages {
        let _ = write!(
            o,
            "<a href=\"{}\" rel=\"next\">Next →</a>",
            esc(&link(pg + 1))
        );
    }
    o.push_str("</nav>");
    if can_write {
        let known = crate::registry::Known::load(s.catalog.as_ref(), &all).await?;
        let editing = q.edit_key().and_then(|k| all.iter().find(|i| i.key == k));
        o.push_str("<div class=\"grid2\">");
        super::instance_edit::instance_form(&mut o, &me, editing, &known);
        let _ = write!(
            o,
            "<form method=\"post\" action=\"/instances/batch\" class=\"card\" id=\"batch-form\"><h2>Batch add</h2>{}\
             <label for=\"lines\">One instance per line: <code>name server_id type instance business</code> (UBackup's format; spaces or tabs). \
             The type by its id or name, the business by its id or name (without spaces); an unknown one refuses the batch with its line number. \
             An instance already registered keeps its period and whether it is enabled.</label>\
             <textarea id=\"lines\" name=\"lines\" rows=\"8\" required placeholder=\"game-db-1 S100234 mysql 3306 101\"></textarea>\
             <p><button type=\"submit\" id=\"batch-submit\">Add all</button></p></form></div>",
            csrf_field(&me)
        );
    }
    Ok(Html(layout("Instances", "/instances", Some(&me), &o)))
}

pub(super) async fn audit(
    s: &AppState,
    me: &Session,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), PageError> {
    s.catalog
        .audit(s.clock.now_ms(), &me.user.name, action, &detail.to_string())
        .await?;
    Ok(())
}

/// Most keys one batch delete takes (the rest of the request is ignored).
pub const MAX_DELETE_KEYS: usize = 10_000;

/// The keys of a batch delete body: every `key` field (server_id TAB type TAB instance), at
/// most [`MAX_DELETE_KEYS`]; one malformed key refuses them all.
pub fn delete_keys(body: &[u8]) -> Result<Vec<InstanceKey>, PageError> {
    // Pairs are decoded one at a time and only up to the cap: an 8 MiB body of empty
    // fields would otherwise become millions of pairs before the cap applied.
    let mut keys = Vec::new();
    for (_, v) in form_urlencoded::parse(body)
        .filter(|(k, _)| k == "key")
        .take(MAX_DELETE_KEYS)
    {
        let mut it = v.split('\t');
        let (Some(server), Some(ty), Some(inst)) = (it.next(), it.next(), it.next()) else {
            return Err(PageError::BadRequest(format!("bad key {v:?}")));
        };
        let inst: i64 = inst
            .parse()
            .map_err(|_| PageError::BadRequest(format!("bad instance in {v:?}")))?;
        keys.push(InstanceKey::new(server, ty, inst));
    }
    Ok(keys)
}

/// `POST /instances/delete`: every checked `key` (server_id TAB type TAB instance).
pub async fn batch_delete(
    State(s): State<AppState>,
    PageOperator(me): PageOperator,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    // Every key is read before the first is deleted: a bad key refuses the whole request
    // instead of leaving the keys before it deleted and unaudited.
    let keys = delete_keys(&body)?;
    let mut removed = Vec::new();
    for key in keys {
        if s.catalog.delete_instance(&key).await? {
            removed.push(key.subject());
        }
    }
    audit(
        &s,
        &me,
        "instance.batch_delete",
        serde_json::json!({"removed": removed}),
    )
    .await?;
    Ok(notice::redirect(
        "/instances",
        Notice::InstancesDeleted,
        Some(removed.len() as u64),
    ))
}

/// History paging.
#[derive(Debug, Deserialize, Default)]
pub struct HistoryQuery {
    #[serde(default)]
    pub(crate) page: i64,
    /// Show the chain of this backup id.
    pub(crate) chain: Option<i64>,
}

/// Rows per history page.
pub const HISTORY_PAGE: i64 = 100;

/// Last history page that can be asked for (0-based).
pub const MAX_HISTORY_PAGE: i64 = 10_000;

/// The history page to show (0-based, within 0..=[`MAX_HISTORY_PAGE`]) for a requested one,
/// and the rows it covers.
pub fn history_page(page: i64) -> (i64, Page) {
    let pg = page.clamp(0, MAX_HISTORY_PAGE);
    (
        pg,
        Page {
            offset: pg * HISTORY_PAGE,
            limit: HISTORY_PAGE,
        },
    )
}

/// The agent command that restores `key` as of `at_ms` into a directory.
pub fn restore_command(key: &InstanceKey, at_ms: i64) -> String {
    let q = |s: &str| {
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    format!(
        "ubackup-agent restore --server-id {} --type {} --instance {} --at {} --to /restore/{}-{}",
        q(&key.server_id),
        q(&key.type_key),
        key.instance,
        crate::clock::rfc3339(at_ms),
        q(&key.server_id),
        key.instance
    )
}

/// The backups table: UBackup's modal columns, plus checksum and chain.
pub fn backups_table(key: &InstanceKey, rows: &[Backup]) -> String {
    let mut o = String::with_capacity(rows.len() * 700 + 1024);
    o.push_str("<div class=\"scroll\"><table class=\"backups\">");
    o.push_str(&thead(&[
        "Status",
        "Storage IP",
        "Client IP",
        "Backup time",
        "Rsync time",
        "Name",
        "Size",
        "Full time",
        "Full name",
        "Log",
        "Checksum",
        "Chain",
    ]));
    o.push_str("<tbody>");
    for b in rows {
        let r = &b.record;
        let status = if !r.succeed {
            "<span class=\"bad\">failed</span>"
        } else if b.corrupt_at.is_some() {
            "<span class=\"bad\">corrupt</span>"
        } else if b.expired_at.is_some() {
            "<span class=\"muted\">expired</span>"
        } else {
            "<span class=\"ok\">ok</span>"
        };
        let _ = write!(
            o,
            "<tr><td>{status}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"wrap\">{}</td><td class=\"mono\" title=\"{}\">{}</td><td><a href=\"/instances/{}/{}/{}?chain={}\">chain</a></td></tr>",
            esc(&r.back_server_ip),
            esc(r.game_server_ip.as_deref().unwrap_or("")),
            time(r.create_time),
            if r.rsync_time > 0 { time(r.rsync_time) } else { duration(r.duration_ms as f64) },
            esc(r.filename.as_deref().unwrap_or("")),
            r.size.map(bytes).unwrap_or_default(),
            time(r.last_all_time),
            esc(r.last_all_filename.as_deref().unwrap_or("")),
            esc(&r.log.chars().take(300).collect::<String>()),
            esc(r.checksum.as_deref().unwrap_or("")),
            esc(&r.checksum.as_deref().unwrap_or("").chars().take(16).collect::<String>()),
            url(&key.server_id),
            url(&key.type_key),
            key.instance,
            b.id
        );
    }
    o.push_str("</tbody></table></div>");
    o
}

/// `GET /instances/{server_id}/{type}/{instance}`: history, and the chain of one backup.
pub async fn history(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
    Path((server, ty, inst)): Path<(String, String, i64)>,
    Query(q): Query<HistoryQuery>,
) -> Result<Html<String>, PageError> {
    let key = InstanceKey::new(&server, &ty, inst);
    let (pg, page) = history_page(q.page);
    let rows = s.catalog.history(&key, page).await?;
    let mut o = String::new();
    if let Some(id) = q.chain {
        let b = s.catalog.backup(id).await?.ok_or(PageError::NotFound)?;
        if b.record.key() != key {
            return Err(PageError::NotFound);
        }
        let plan = crate::restore::plan(s.catalog.as_ref(), &key, b.record.create_time).await?;
        let _ = write!(
            o,
            "<section class=\"card\" id=\"chain\"><h2>Chain of backup {id} ({})</h2>",
            esc(b.record.filename.as_deref().unwrap_or(""))
        );
        o.push_str("<div class=\"scroll\"><table>");
        o.push_str(&thead(&[
            "#", "Kind", "File", "Node", "Path", "Size", "Checksum", "Created",
        ]));
        o.push_str("<tbody>");
        for (n, st) in plan.steps.iter().enumerate() {
            let _ = write!(
                o,
                "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"mono\">{}</td><td>{} {}</td><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                n + 1,
                st.kind,
                esc(st.filename.as_deref().unwrap_or("")),
                esc(&st.node_id),
                esc(&st.back_server_ip),
                esc(st.file_path.as_deref().unwrap_or("")),
                st.size.map(bytes).unwrap_or_default(),
                esc(st.checksum.as_deref().unwrap_or("")),
                time(st.create_time)
            );
        }
        o.push_str("</tbody></table></div>");
        for h in &plan.holes {
            let _ = write!(
                o,
                "<p class=\"bad\">Hole: {} is {}</p>",
                esc(&h.filename),
                esc(&h.reason)
            );
        }
        let _ = write!(
            o,
            "<p>{}</p><div class=\"copy\"><code id=\"restore-cmd\">{}</code><button type=\"button\" data-copy=\"restore-cmd\">Copy</button></div></section>",
            if plan.complete {
                "<span class=\"ok\">Complete: restorable.</span>"
            } else {
                "<span class=\"bad\">Incomplete: this backup cannot be restored as is.</span>"
            },
            esc(&restore_command(&key, b.record.create_time))
        );
    }
    let _ = write!(o, "<h2>History, newest first (page {})</h2>", pg + 1);
    o.push_str(&backups_table(&key, &rows));
    let base = format!(
        "/instances/{}/{}/{}",
        url(&key.server_id),
        url(&key.type_key),
        key.instance
    );
    o.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    if pg > 0 {
        let _ = write!(
            o,
            "<a href=\"{base}?page={}\" rel=\"prev\">← Newer</a>",
            pg - 1
        );
    }
    if rows.len() as i64 == HISTORY_PAGE {
        let _ = write!(
            o,
            "<a href=\"{base}?page={}\" rel=\"next\">Older →</a>",
            pg + 1
        );
    }
    o.push_str("</nav>");
    Ok(Html(layout(&key.subject(), "/instances", Some(&me), &o)))
}

/// `GET /businesses`.
pub async fn businesses(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
    Query(q): Query<ListQuery>,
) -> Result<Html<String>, PageError> {
    let rows = s.catalog.businesses().await?;
    // Counted by the catalog (one GROUP BY), not by reading the whole registry.
    let count: HashMap<i64, i64> = s
        .catalog
        .instances_per_business()
        .await?
        .into_iter()
        .collect();
    let mut o = String::new();
    o.push_str(&notice::html(&q.done, &q.n, None));
    o.push_str("<div class=\"scroll\"><table>");
    o.push_str(&thead(&["Business id", "Name", "Instances"]));
    o.push_str("<tbody>");
    for b in &rows {
        let _ = write!(
            o,
            "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\"><a href=\"/instances?field=business&q={}\">{}</a></td></tr>",
            b.business_id,
            esc(&b.name),
            b.business_id,
            count.get(&b.business_id).copied().unwrap_or(0)
        );
    }
    o.push_str("</tbody></table></div>");
    if me.user.role >= Role::Operator {
        let _ = write!(
            o,
            "<form method=\"post\" action=\"/businesses\" class=\"card filters\"><h2>Add or rename</h2>{}\
             <div><label for=\"b-id\">Business id</label><input id=\"b-id\" name=\"id\" type=\"number\" required></div>\
             <div><label for=\"b-name\">Name</label><input id=\"b-name\" name=\"name\" required maxlength=\"255\"></div>\
             <button type=\"submit\">Save</button></form>",
            csrf_field(&me)
        );
    }
    Ok(Html(layout("Businesses", "/businesses", Some(&me), &o)))
}

/// `GET /types`.
pub async fn types(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
    Query(q): Query<ListQuery>,
) -> Result<Html<String>, PageError> {
    let rows = s.catalog.backup_types().await?;
    let mut o = String::new();
    o.push_str(&notice::html(&q.done, &q.n, None));
    o.push_str("<p class=\"muted\">Batch-add lines and the instance form name a type by its id or its name.</p><div class=\"scroll\"><table>");
    o.push_str(&thead(&["Type id", "Name"]));
    o.push_str("<tbody>");
    for t in &rows {
        let _ = write!(
            o,
            "<tr><td class=\"num\">{}</td><td>{}</td></tr>",
            t.id,
            esc(&t.name)
        );
    }
    o.push_str("</tbody></table></div>");
    if me.user.role >= Role::Operator {
        let _ = write!(
            o,
            "<form method=\"post\" action=\"/types\" class=\"card filters\"><h2>Add</h2>{}\
             <div><label for=\"t-id\">Type id</label><input id=\"t-id\" name=\"id\" type=\"number\" required></div>\
             <div><label for=\"t-name\">Name</label><input id=\"t-name\" name=\"name\" required maxlength=\"64\"></div>\
             <button type=\"submit\">Save</button></form>",
            csrf_field(&me)
        );
    }
    Ok(Html(layout("Backup types", "/types", Some(&me), &o)))
}

/// Business and type forms.
#[derive(Debug, Deserialize)]
pub struct IdName {
    pub(crate) id: i64,
    pub(crate) name: String,
}

/// A business or type name: trimmed, 1 to `max` bytes, no control characters.
pub fn name_ok(n: &str, max: usize) -> Result<String, PageError> {
    crate::validate::display_name("name", n, max, false)
        .map_err(|e| PageError::BadRequest(e.to_string()))
}

/// `POST /businesses`.
pub async fn save_business(
    State(s): State<AppState>,
    PageOperator(me): PageOperator,
    Form(f): Form<IdName>,
) -> Result<Response, PageError> {
    let b = Business {
        business_id: f.id,
        name: name_ok(&f.name, crate::validate::MAX_BUSINESS_NAME_CHARS)?,
    };
    s.catalog
        .upsert_businesses(std::slice::from_ref(&b))
        .await?;
    audit(
        &s,
        &me,
        "business.put",
        serde_json::to_value(&b).unwrap_or_default(),
    )
    .await?;
    Ok(notice::redirect("/businesses", Notice::BusinessSaved, None))
}

/// `POST /types`.
pub async fn save_type(
    State(s): State<AppState>,
    PageOperator(me): PageOperator,
    Form(f): Form<IdName>,
) -> Result<Response, PageError> {
    let t = BackupType {
        id: f.id,
        name: name_ok(&f.name, crate::validate::MAX_TYPE_NAME_CHARS)?,
    };
    s.catalog
        .upsert_backup_types(std::slice::from_ref(&t))
        .await?;
    audit(
        &s,
        &me,
        "backup_type.put",
        serde_json::to_value(&t).unwrap_or_default(),
    )
    .await?;
    Ok(notice::redirect("/types", Notice::TypeSaved, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_and_quotes_the_restore_command() {
        assert_eq!(crate::clock::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            crate::clock::rfc3339(1_764_489_600_000),
            "2025-11-30T08:00:00Z"
        );
        let k = InstanceKey::new("S1 x", "MySQL", 3306);
        assert_eq!(
            restore_command(&k, 0),
            "ubackup-agent restore --server-id 'S1 x' --type mysql --instance 3306 --at 1970-01-01T00:00:00Z --to /restore/'S1 x'-3306"
        );
    }

    #[test]
    fn a_batch_delete_with_one_bad_key_deletes_nothing() {
        assert_eq!(
            delete_keys(b"key=S1%09mysql%093306&csrf=x&key=S2%09redis%096379").unwrap_or_default(),
            vec![
                InstanceKey::new("S1", "mysql", 3306),
                InstanceKey::new("S2", "redis", 6379)
            ]
        );
        // The handler deleted S1 before it met the bad key, and audited nothing.
        assert!(delete_keys(b"key=S1%09mysql%093306&key=S2%09redis").is_err());
        assert!(delete_keys(b"key=S1%09mysql%09x").is_err());
        let many = "key=S%09t%091&".repeat(MAX_DELETE_KEYS + 5);
        assert_eq!(
            delete_keys(many.as_bytes()).map(|k| k.len()).ok(),
            Some(MAX_DELETE_KEYS)
        );
    }

    #[test]
    fn list_and_history_pages_stay_in_range() {
        assert_eq!(list_page(0, 0), (0, 1));
        assert_eq!(list_page(usize::MAX, 0), (0, 1));
        assert_eq!(list_page(1, PAGE_ROWS), (0, 1));
        assert_eq!(list_page(1, PAGE_ROWS + 1), (1, 2));
        assert_eq!(
            list_page(usize::MAX, usize::MAX).1,
            usize::MAX.div_ceil(PAGE_ROWS)
        );
        assert_eq!(history_page(i64::MIN).0, 0);
        let (pg, p) = history_page(i64::MAX);
        assert_eq!(
            (pg, p.offset, p.limit),
            (
                MAX_HISTORY_PAGE,
                MAX_HISTORY_PAGE * HISTORY_PAGE,
                HISTORY_PAGE
            )
        );
    }
}
