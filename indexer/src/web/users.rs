//! Users and API tokens. Every user sees their own API tokens here (name, created, expiry,
//! last use; never the secret), makes a named one (shown once), revokes any of them, and sets
//! their own focus businesses; an admin also sees and revokes everyone's, adds users, edits
//! one (role, password, focus businesses: each left blank stays as it was), deletes one
//! (never the last admin, never themself), revokes all of a user's tokens and ends its
//! sessions.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::errors::PageError;
use super::html::{csrf_field, esc, layout, thead, time};
use super::notice::{self, Notice};
use super::session::{PageAdmin, PageViewer, Session};
use super::WebState;
use crate::catalog::{ApiToken, Role, UserRemoval};
use crate::http::AppState;

/// Page query.
#[derive(Debug, Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    pub(crate) done: String,
    /// The notice's count (`web::notice`).
    #[serde(default)]
    pub(crate) n: String,
    /// The user to edit (its Edit link).
    #[serde(default)]
    pub(crate) edit: String,
}

const DAY_MS: i64 = 86_400_000;

/// `GET /users`: an admin's users and every token; anyone else's own tokens.
pub async fn page(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, PageError> {
    let admin = me.user.role >= Role::Admin;
    let now = s.clock.now_ms();
    let mut o = String::new();
    o.push_str(&notice::html(&q.done, &q.n, None));
    let users = if admin {
        s.catalog.users().await?
    } else {
        Vec::new()
    };
    let businesses: HashMap<i64, String> = s
        .catalog
        .businesses()
        .await?
        .into_iter()
        .map(|b| (b.business_id, b.name))
        .collect();
    if admin {
        users_table(&mut o, &me, &users, &businesses);
    }
    let tokens = s
        .catalog
        .tokens((!admin).then_some(me.user.id), now)
        .await?;
    tokens_table(&mut o, &me, &tokens, admin);
    let names: Vec<&str> = users.iter().map(|(u, _)| u.name.as_str()).collect();
    token_form(&mut o, &me, &names, s.login.policy());
    if admin {
        let editing = users.iter().map(|(u, _)| u).find(|u| u.name == q.edit);
        user_form(&mut o, &me, editing);
    } else {
        focus_form(&mut o, &me, &businesses);
    }
    let title = if admin { "Users" } else { "API tokens" };
    Ok(Html(layout(title, "/users", Some(&me), &o)))
}

/// The focus businesses of a user's `focus_business` (UBackup's JSON list; numbers or
/// numeric strings), in order.
pub fn focus_ids(json: &str) -> Vec<i64> {
    serde_json::from_str::<Vec<serde_json::Value>>(json)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()))
        .collect()
}

/// Focus businesses for people: "Name (id)" each, "none" for none.
pub fn focus_names(json: &str, businesses: &HashMap<i64, String>) -> String {
    let ids = focus_ids(json);
    if ids.is_empty() {
        return "none".into();
    }
    ids.iter()
        .map(|id| match businesses.get(id) {
            Some(n) => format!("{n} ({id})"),
            None => format!("unknown business {id}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn users_table(
    o: &mut String,
    me: &Session,
    users: &[(crate::catalog::User, i64)],
    businesses: &HashMap<i64, String>,
) {
    o.push_str("<div class=\"scroll\"><table id=\"users\">");
    o.push_str(&thead(&[
        "Name",
        "Role",
        "Focus businesses",
        "API tokens",
        "Actions",
    ]));
    o.push_str("<tbody>");
    for (u, tokens) in users {
        let delete = if u.name == me.user.name {
            String::new()
        } else {
            format!(
                "<form method=\"post\" action=\"/users/delete\" class=\"inline\" data-confirm=\"Delete user {n}? Its API tokens stop working and its sessions end.\">{c}\
                 <input type=\"hidden\" name=\"name\" value=\"{n}\">\
                 <button type=\"submit\" class=\"danger\" aria-label=\"Delete user {n}\">Delete</button></form>",
                c = csrf_field(me),
                n = esc(&u.name),
            )
        };
        let _ = write!(
            o,
            "<tr data-user=\"{n}\"><td data-label=\"Name\">{n}</td><td data-label=\"Role\">{}</td><td class=\"focus wrap\" data-label=\"Focus\">{}</td><td class=\"num\" data-label=\"API tokens\">{tokens}</td><td class=\"actions\">\
             <a href=\"/users?edit={}#user-form\" class=\"button secondary\" aria-label=\"Edit user {n}\">Edit</a> \
             <form method=\"post\" action=\"/users/token\" class=\"inline\">{c}<input type=\"hidden\" name=\"name\" value=\"{n}\">\
             <button type=\"submit\" name=\"op\" value=\"revoke\" class=\"secondary\">Revoke tokens</button>\
             <button type=\"submit\" name=\"op\" value=\"logout\" class=\"secondary\">End sessions</button></form> {delete}</td></tr>",
            u.role.name(),
            esc(&focus_names(&u.focus_business, businesses)),
            super::html::url(&u.name),
            c = csrf_field(me),
            n = esc(&u.name),
        );
    }
    o.push_str("</tbody></table></div>");
}

fn tokens_table(o: &mut String, me: &Session, tokens: &[ApiToken], admin: bool) {
    let _ = write!(
        o,
        "<h2 id=\"tokens-title\">{}</h2>",
        if admin {
            "API tokens"
        } else {
            "Your API tokens"
        }
    );
    if tokens.is_empty() {
        o.push_str("<p class=\"muted\" id=\"no-tokens\">No live API tokens.</p>");
        return;
    }
    o.push_str("<div class=\"scroll\"><table id=\"tokens\" aria-labelledby=\"tokens-title\">");
    let mut cols = vec!["Name", "Created", "Expires", "Last used", ""];
    if admin {
        cols.insert(0, "User");
    }
    o.push_str(&thead(&cols));
    o.push_str("<tbody>");
    for t in tokens {
        o.push_str("<tr>");
        if admin {
            let _ = write!(o, "<td data-label=\"User\">{}</td>", esc(&t.user));
        }
        let _ = write!(
            o,
            "<td class=\"token-name\" data-label=\"Name\">{}</td><td data-label=\"Created\">{}</td>\
             <td data-label=\"Expires\">{}</td><td data-label=\"Last used\">{}</td><td>\
             <form method=\"post\" action=\"/users/tokens/revoke\" class=\"inline\">{}\
             <input type=\"hidden\" name=\"id\" value=\"{}\">\
             <button type=\"submit\" class=\"secondary\" aria-label=\"Revoke token {}\">Revoke</button></form></td></tr>",
            esc(&t.name),
            time(t.created_ms),
            time(t.expires_ms),
            if t.last_used_ms > 0 { time(t.last_used_ms) } else { "never".into() },
            csrf_field(me),
            t.id,
            esc(&t.name),
        );
    }
    o.push_str("</tbody></table></div>");
}

fn token_form(o: &mut String, me: &Session, users: &[&str], p: &crate::auth::LoginPolicy) {
    let max_days = (p.token_max_ms / DAY_MS).max(1);
    let default_days = (p.token_default_ms / DAY_MS).clamp(1, max_days);
    let _ = write!(
        o,
        "<form method=\"post\" action=\"/users/tokens\" class=\"card filters\" id=\"token-form\"><h2>New API token</h2>{}\
         <div><label for=\"t-name\">Name</label><input id=\"t-name\" name=\"name\" required maxlength=\"{}\" placeholder=\"restore on db7\" autocomplete=\"off\"></div>\
         <div><label for=\"t-days\">Lifetime (days, at most {max_days})</label><input id=\"t-days\" name=\"days\" type=\"number\" min=\"1\" max=\"{max_days}\" value=\"{default_days}\" required></div>",
        csrf_field(me),
        crate::validate::MAX_TOKEN_NAME_CHARS,
    );
    if !users.is_empty() {
        o.push_str(
            "<div><label for=\"t-user\">For user</label><select id=\"t-user\" name=\"user\">",
        );
        for u in users {
            let sel = if *u == me.user.name { " selected" } else { "" };
            let _ = write!(o, "<option{sel}>{}</option>", esc(u));
        }
        o.push_str("</select></div>");
    }
    o.push_str("<button type=\"submit\">Create token</button></form>");
}

fn user_form(o: &mut String, me: &Session, editing: Option<&crate::catalog::User>) {
    let role = editing.map_or(Role::Viewer, |u| u.role);
    let mut roles = String::new();
    for r in [Role::Viewer, Role::Operator, Role::Admin] {
        let sel = if r == role { " selected" } else { "" };
        let _ = write!(roles, "<option{sel}>{}</option>", r.name());
    }
    let (title, name, ro, pw_label) = match editing {
        Some(u) => (
            format!("Edit user {}", esc(&u.name)),
            esc(&u.name),
            " readonly",
            "New password (blank: unchanged)",
        ),
        None => (
            "Add a user, or change one".to_string(),
            String::new(),
            "",
            "Password (12+ characters; blank keeps a user's own)",
        ),
    };
    let focus = editing
        .map(|u| {
            focus_ids(&u.focus_business)
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let _ = write!(
        o,
        "<form method=\"post\" action=\"/users\" class=\"card filters\" id=\"user-form\"><h2>{title}</h2>{}\
         <p class=\"muted\" id=\"user-help\">A new user needs a password. For a user that exists, a field left blank stays as it was: \
         a role change keeps the password and the focus businesses; enter <code>-</code> as focus businesses to clear them.</p>\
         <div><label for=\"u-name\">Name</label><input id=\"u-name\" name=\"name\" required maxlength=\"64\" autocomplete=\"off\" value=\"{name}\"{ro}></div>\
         <div><label for=\"u-role\">Role</label><select id=\"u-role\" name=\"role\">{roles}</select></div>\
         <div><label for=\"u-pw\">{pw_label}</label><input id=\"u-pw\" name=\"password\" type=\"password\" minlength=\"12\" autocomplete=\"new-password\"></div>\
         <div><label for=\"u-focus\">Focus businesses (ids or names, commas between)</label><input id=\"u-focus\" name=\"focus\" placeholder=\"101, 102\" value=\"{}\"></div>\
         <button type=\"submit\" id=\"user-submit\">Save</button>{}</form>",
        csrf_field(me),
        esc(&focus),
        if editing.is_some() {
            " <a href=\"/users\" id=\"user-cancel\">Cancel</a>"
        } else {
            ""
        },
    );
}

/// A non-admin's own focus businesses (an admin sets anyone's in the user form).
fn focus_form(o: &mut String, me: &Session, businesses: &HashMap<i64, String>) {
    let ids = focus_ids(&me.user.focus_business);
    let _ = write!(
        o,
        "<form method=\"post\" action=\"/users/focus\" class=\"card filters\" id=\"focus-form\"><h2>Your focus businesses</h2>{}\
         <p class=\"muted\">Now: <span id=\"focus-now\">{}</span>. Their alerts come first on the alerts page. Business ids or names, commas between; empty: none.</p>\
         <div><label for=\"f-focus\">Focus businesses</label><input id=\"f-focus\" name=\"focus\" placeholder=\"101, 102\" value=\"{}\"></div>\
         <button type=\"submit\" id=\"focus-submit\">Save</button></form>",
        csrf_field(me),
        esc(&focus_names(&me.user.focus_business, businesses)),
        esc(&ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
    );
}

/// The new-token form.
#[derive(Debug, Deserialize)]
pub struct NewTokenForm {
    /// The token's name.
    pub(crate) name: String,
    /// Lifetime in days (empty: the default).
    #[serde(default)]
    pub(crate) days: String,
    /// Whose token (admins only; empty: one's own).
    #[serde(default)]
    pub(crate) user: String,
}

/// A [`NewTokenForm`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidNewToken {
    /// The name ([`crate::validate::token_name`]).
    pub name: String,
    /// Lifetime in seconds (none: the default).
    pub secs: Option<u64>,
    /// Whose (none: the requester's own).
    pub user: Option<String>,
}

impl NewTokenForm {
    /// Checks the form: a token name, a lifetime of 1 to `max_days` days or empty.
    pub fn check(&self, max_days: i64) -> Result<ValidNewToken, PageError> {
        let name = crate::validate::token_name(&self.name)
            .map_err(|e| PageError::BadRequest(e.to_string()))?;
        let days = self.days.trim();
        let secs = if days.is_empty() {
            None
        } else {
            match days.parse::<i64>() {
                Ok(d) if (1..=max_days.max(1)).contains(&d) => {
                    u64::try_from(d).ok().map(|d| d * 86_400)
                }
                _ => {
                    return Err(PageError::BadRequest(format!(
                        "lifetime: 1 to {} days",
                        max_days.max(1)
                    )))
                }
            }
        };
        let user = self.user.trim();
        Ok(ValidNewToken {
            name,
            secs,
            user: (!user.is_empty()).then(|| user.to_string()),
        })
    }
}

/// `POST /users/tokens`: a named token for oneself (an admin: for anyone), shown once.
pub async fn create_token(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
    Form(f): Form<NewTokenForm>,
) -> Result<Response, PageError> {
    let v = f.check(s.login.policy().token_max_ms / DAY_MS)?;
    let owner = match v.user.as_deref() {
        None => me.user.clone(),
        Some(n) if n == me.user.name => me.user.clone(),
        Some(_) if me.user.role < Role::Admin => {
            return Err(PageError::Forbidden(Role::Admin.name()))
        }
        Some(n) => s.catalog.user(n).await?.ok_or(PageError::NotFound)?,
    };
    let now = s.clock.now_ms();
    let t = crate::auth::new_token();
    let expires = s.login.token_expiry(now, v.secs);
    let id = s
        .catalog
        .add_named_token(
            owner.id,
            &v.name,
            &crate::auth::token_hash(&t),
            now,
            expires,
        )
        .await?;
    s.catalog
        .audit(
            now,
            &me.user.name,
            "token.issue",
            &serde_json::json!({"user": owner.name, "id": id, "name": v.name,
                "expires_ms": expires})
            .to_string(),
        )
        .await?;
    Ok(shown_once(&me, &owner.name, &v.name, &t, expires))
}

fn shown_once(me: &Session, user: &str, name: &str, token: &str, expires: i64) -> Response {
    let body = format!(
        "<p>New API token <b>{}</b> for <b>{}</b>, until {}. It is shown only now:</p>\
         <div class=\"copy\"><code id=\"token\">{}</code>\
         <button type=\"button\" data-copy=\"token\">Copy</button></div><p><a href=\"/users\">Back to tokens</a></p>",
        esc(name),
        esc(user),
        time(expires),
        esc(token)
    );
    Html(layout("API token", "/users", Some(me), &body)).into_response()
}

/// The revoke-one form.
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    /// The token's id.
    pub(crate) id: String,
}

/// `POST /users/tokens/revoke`: revokes one token of one's own (an admin: anyone's). Another
/// user's token is "not found" to a non-admin.
pub async fn revoke_token(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
    Form(f): Form<RevokeForm>,
) -> Result<Response, PageError> {
    let id: i64 =
        f.id.trim()
            .parse()
            .map_err(|_| PageError::BadRequest("id: a token id".into()))?;
    let owner = (me.user.role < Role::Admin).then_some(me.user.id);
    let t = s
        .catalog
        .revoke_token(id, owner)
        .await?
        .ok_or(PageError::NotFound)?;
    s.catalog
        .audit(
            s.clock.now_ms(),
            &me.user.name,
            "token.revoke",
            &serde_json::json!({"user": t.user, "id": t.id, "name": t.name}).to_string(),
        )
        .await?;
    Ok(notice::redirect("/users", Notice::TokenRevoked, None))
}

/// The user form.
#[derive(Debug, Deserialize)]
pub struct UserForm {
    pub(crate) name: String,
    pub(crate) role: String,
    /// Blank: unchanged (a new user needs one).
    #[serde(default)]
    pub(crate) password: String,
    /// Blank: unchanged; `-`: none; else business ids or names.
    #[serde(default)]
    pub(crate) focus: String,
}

/// A [`UserForm`] checked (the password stays in the form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidUser {
    /// Trimmed, 1 to 64 bytes, no control or white-space characters.
    pub name: String,
    /// The role.
    pub role: Role,
    /// Whether the form sets a password.
    pub password: bool,
    /// Focus businesses as typed (ids or names).
    pub focus: super::instance_edit::Change<Vec<String>>,
}

/// Longest user name (bytes).
pub const MAX_NAME_BYTES: usize = 64;

/// Shortest password (characters).
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Longest password (bytes).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Most focus businesses a user has.
pub const MAX_FOCUS: usize = 1000;

/// Business references separated by commas (ids may also be separated by spaces, as the old
/// form took them): each trimmed, empty ones skipped.
pub fn focus_refs(s: &str) -> Result<Vec<String>, PageError> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let words: Vec<&str> = part.split_whitespace().collect();
        if words.len() > 1 && words.iter().all(|w| w.parse::<i64>().is_ok()) {
            out.extend(words.iter().map(|w| w.to_string()));
        } else {
            out.push(part.to_string());
        }
    }
    if out.len() > MAX_FOCUS {
        return Err(PageError::BadRequest(format!(
            "focus: at most {MAX_FOCUS} businesses"
        )));
    }
    Ok(out)
}

impl UserForm {
    /// Checks the form: a name of 1 to [`MAX_NAME_BYTES`] bytes without spaces or control
    /// characters, a role by its name, a password blank or of [`MIN_PASSWORD_CHARS`]
    /// characters to [`MAX_PASSWORD_BYTES`] bytes, focus businesses blank, `-` or ids and
    /// names separated by commas.
    pub fn check(&self) -> Result<ValidUser, PageError> {
        let name = self.name.trim();
        if name.is_empty()
            || name.len() > MAX_NAME_BYTES
            || name.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(PageError::BadRequest(format!(
                "name: 1 to {MAX_NAME_BYTES} characters, no spaces"
            )));
        }
        let role =
            Role::parse(&self.role).ok_or_else(|| PageError::BadRequest("unknown role".into()))?;
        let password = !self.password.is_empty();
        if password
            && (self.password.chars().count() < MIN_PASSWORD_CHARS
                || self.password.len() > MAX_PASSWORD_BYTES)
        {
            return Err(PageError::BadRequest(format!(
                "password: {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} characters"
            )));
        }
        let focus = match self.focus.trim() {
            "" => super::instance_edit::Change::Keep,
            "-" => super::instance_edit::Change::Clear,
            f => super::instance_edit::Change::Set(focus_refs(f)?),
        };
        Ok(ValidUser {
            name: name.to_string(),
            role,
            password,
            focus,
        })
    }
}

/// The focus list `refs` names, as stored (UBackup's JSON list of business ids); an unknown
/// business is refused.
async fn focus_json(s: &AppState, refs: &[String]) -> Result<(String, Vec<i64>), PageError> {
    let known = crate::registry::Known::new(&[], &s.catalog.businesses().await?, &[]);
    let mut ids: Vec<i64> = Vec::with_capacity(refs.len());
    for r in refs {
        let id = known
            .business_ref(r)
            .map_err(|e| PageError::BadRequest(format!("focus: {e}")))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok((
        serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()),
        ids,
    ))
}

/// `POST /users`: adds a user, or changes one: what the form leaves blank stays as it was
/// (a role change keeps the password and the focus businesses). The only admin cannot be
/// given another role.
pub async fn save(
    State(s): State<AppState>,
    Extension(web): Extension<WebState>,
    PageAdmin(me): PageAdmin,
    Form(f): Form<UserForm>,
) -> Result<Response, PageError> {
    let v = f.check()?;
    let name = v.name.as_str();
    let now = s.clock.now_ms();
    let focus = match &v.focus {
        super::instance_edit::Change::Set(refs) => Some(focus_json(&s, refs).await?),
        super::instance_edit::Change::Clear => Some(("[]".to_string(), Vec::new())),
        super::instance_edit::Change::Keep => None,
    };
    let existing = s.catalog.user(name).await?;
    if let Some(u) = &existing {
        if u.role == Role::Admin && v.role != Role::Admin {
            let admins = s
                .catalog
                .users()
                .await?
                .iter()
                .filter(|(x, _)| x.role == Role::Admin)
                .count();
            if admins <= 1 {
                return Err(PageError::BadRequest(format!(
                    "{name} is the only admin: make another admin first"
                )));
            }
        }
    }
    let hash = if v.password {
        let pw = f.password;
        Some(
            tokio::task::spawn_blocking(move || crate::auth::hash_password(&pw))
                .await
                .map_err(|e| PageError::Internal(e.to_string()))?
                .map_err(|e| PageError::Internal(e.to_string()))?,
        )
    } else {
        None
    };
    // A new password or role drops the user's tokens (the catalog) and ends its sessions
    // (here; they would fail their credentials check on the next request anyway).
    let (id, credentials_changed) = match (&existing, hash) {
        (_, Some(hash)) => (s.catalog.put_user(name, v.role, &hash, now).await?, true),
        (Some(u), None) => {
            if u.role != v.role {
                s.catalog.set_role(u.id, v.role).await?;
            }
            (u.id, u.role != v.role)
        }
        (None, None) => {
            return Err(PageError::BadRequest(
                "a new user needs a password (12+ characters)".into(),
            ))
        }
    };
    let sessions = if credentials_changed {
        web.sessions.remove_user(name)
    } else {
        0
    };
    let focus_ids = match focus {
        Some((json, ids)) => {
            s.catalog.set_focus(id, &json).await?;
            Some(ids)
        }
        None if existing.is_none() => {
            s.catalog.set_focus(id, "[]").await?;
            Some(Vec::new())
        }
        None => None,
    };
    s.catalog
        .audit(
            now,
            &me.user.name,
            "user.put",
            &serde_json::json!({"name": name, "role": v.role.name(), "focus": focus_ids,
                "password_set": v.password, "new": existing.is_none(),
                "sessions_ended": sessions})
            .to_string(),
        )
        .await?;
    Ok(notice::redirect("/users", Notice::UserSaved, None))
}

/// The delete form.
#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    pub(crate) name: String,
}

/// `POST /users/delete` (admins): removes a user, its tokens and its sessions; never oneself,
/// never the only admin.
pub async fn delete(
    State(s): State<AppState>,
    Extension(web): Extension<WebState>,
    PageAdmin(me): PageAdmin,
    Form(f): Form<DeleteForm>,
) -> Result<Response, PageError> {
    let name = f.name.trim();
    if name == me.user.name {
        return Err(PageError::BadRequest(
            "you cannot delete yourself: another admin can".into(),
        ));
    }
    match s.catalog.delete_user(name).await? {
        UserRemoval::Removed => {}
        UserRemoval::NotFound => return Err(PageError::NotFound),
        UserRemoval::LastAdmin => {
            return Err(PageError::BadRequest(format!(
                "{name} is the only admin and cannot be deleted"
            )))
        }
    }
    let sessions = web.sessions.remove_user(name);
    s.catalog
        .audit(
            s.clock.now_ms(),
            &me.user.name,
            "user.delete",
            &serde_json::json!({"name": name, "sessions_ended": sessions}).to_string(),
        )
        .await?;
    Ok(notice::redirect("/users", Notice::UserDeleted, None))
}

/// The own-focus form.
#[derive(Debug, Deserialize)]
pub struct FocusForm {
    #[serde(default)]
    pub(crate) focus: String,
}

/// `POST /users/focus`: anyone sets their own focus businesses (empty: none).
pub async fn own_focus(
    State(s): State<AppState>,
    PageViewer(me): PageViewer,
    Form(f): Form<FocusForm>,
) -> Result<Response, PageError> {
    let refs = match f.focus.trim() {
        "-" => Vec::new(),
        x => focus_refs(x)?,
    };
    let (json, ids) = focus_json(&s, &refs).await?;
    s.catalog.set_focus(me.user.id, &json).await?;
    s.catalog
        .audit(
            s.clock.now_ms(),
            &me.user.name,
            "user.focus",
            &serde_json::json!({"name": me.user.name, "focus": ids}).to_string(),
        )
        .await?;
    Ok(notice::redirect("/users", Notice::FocusSaved, None))
}

/// Token form.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    pub(crate) name: String,
    pub(crate) op: String,
}

/// What the token form asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOp {
    /// Issue a token (shown once).
    Issue,
    /// Revoke every token of the user.
    Revoke,
    /// End every session of the user.
    Logout,
}

impl TokenOp {
    /// The operation named `op` (`issue`, `revoke`, `logout`).
    pub fn parse(op: &str) -> Option<TokenOp> {
        match op {
            "issue" => Some(TokenOp::Issue),
            "revoke" => Some(TokenOp::Revoke),
            "logout" => Some(TokenOp::Logout),
            _ => None,
        }
    }
}

/// `POST /users/token` (admins): issue a token with the default lifetime (shown once), revoke
/// all of a user's tokens, or end its sessions.
pub async fn token(
    State(s): State<AppState>,
    Extension(web): Extension<WebState>,
    PageAdmin(me): PageAdmin,
    Form(f): Form<TokenForm>,
) -> Result<Response, PageError> {
    let u = s.catalog.user(&f.name).await?.ok_or(PageError::NotFound)?;
    let now = s.clock.now_ms();
    match TokenOp::parse(&f.op) {
        Some(TokenOp::Issue) => {
            let t = crate::auth::new_token();
            let expires = s.login.token_expiry(now, None);
            let name = format!("issued by {}", me.user.name);
            let id = s
                .catalog
                .add_named_token(u.id, &name, &crate::auth::token_hash(&t), now, expires)
                .await?;
            s.catalog
                .audit(
                    now,
                    &me.user.name,
                    "token.issue",
                    &serde_json::json!({"user": u.name, "id": id, "name": name,
                        "expires_ms": expires})
                    .to_string(),
                )
                .await?;
            Ok(shown_once(&me, &u.name, &name, &t, expires))
        }
        Some(TokenOp::Revoke) => {
            let n = s.catalog.revoke_tokens(u.id).await?;
            s.catalog
                .audit(
                    now,
                    &me.user.name,
                    "token.revoke_all",
                    &serde_json::json!({"user": u.name, "revoked": n}).to_string(),
                )
                .await?;
            Ok(notice::redirect("/users", Notice::TokensRevoked, Some(n)))
        }
        Some(TokenOp::Logout) => {
            let n = web.sessions.remove_user(&u.name);
            s.catalog
                .audit(
                    now,
                    &me.user.name,
                    "user.logout_everywhere",
                    &serde_json::json!({"user": u.name, "sessions": n}).to_string(),
                )
                .await?;
            Ok(notice::redirect(
                "/users",
                Notice::SessionsEnded,
                u64::try_from(n).ok(),
            ))
        }
        None => Err(PageError::BadRequest("unknown operation".into())),
    }
}
