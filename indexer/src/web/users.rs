//! Users and API tokens. Every user sees their own API tokens here (name, created, expiry,
//! last use; never the secret), makes a named one (shown once) and revokes any of them; an
//! admin also sees and revokes everyone's, adds users, changes roles and passwords, revokes
//! all of a user's tokens and ends its sessions.

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
use crate::catalog::{ApiToken, Role};
use crate::http::AppState;

/// Page query.
#[derive(Debug, Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    pub(crate) done: String,
    /// The notice's count (`web::notice`).
    #[serde(default)]
    pub(crate) n: String,
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
    if admin {
        users_table(&mut o, &me, &users);
    }
    let tokens = s
        .catalog
        .tokens((!admin).then_some(me.user.id), now)
        .await?;
    tokens_table(&mut o, &me, &tokens, admin);
    let names: Vec<&str> = users.iter().map(|(u, _)| u.name.as_str()).collect();
    token_form(&mut o, &me, &names, s.login.policy());
    if admin {
        user_form(&mut o, &me);
    }
    let title = if admin { "Users" } else { "API tokens" };
    Ok(Html(layout(title, "/users", Some(&me), &o)))
}

fn users_table(o: &mut String, me: &Session, users: &[(crate::catalog::User, i64)]) {
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
        let _ = write!(
            o,
            "<tr><td data-label=\"Name\">{}</td><td data-label=\"Role\">{}</td><td class=\"mono\" data-label=\"Focus\">{}</td><td class=\"num\" data-label=\"API tokens\">{tokens}</td><td>\
             <form method=\"post\" action=\"/users/token\" class=\"inline\">{c}<input type=\"hidden\" name=\"name\" value=\"{n}\">\
             <button type=\"submit\" name=\"op\" value=\"revoke\" class=\"secondary\">Revoke tokens</button>\
             <button type=\"submit\" name=\"op\" value=\"logout\" class=\"secondary\">End sessions</button></form></td></tr>",
            esc(&u.name),
            u.role.name(),
            esc(&u.focus_business),
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

fn user_form(o: &mut String, me: &Session) {
    let _ = write!(
        o,
        "<form method=\"post\" action=\"/users\" class=\"card filters\" id=\"user-form\"><h2>Add a user, or change one</h2>{}\
         <div><label for=\"u-name\">Name</label><input id=\"u-name\" name=\"name\" required maxlength=\"64\" autocomplete=\"off\"></div>\
         <div><label for=\"u-role\">Role</label><select id=\"u-role\" name=\"role\"><option>viewer</option><option>operator</option><option>admin</option></select></div>\
         <div><label for=\"u-pw\">Password (12+ characters)</label><input id=\"u-pw\" name=\"password\" type=\"password\" minlength=\"12\" required autocomplete=\"new-password\"></div>\
         <div><label for=\"u-focus\">Focus business ids</label><input id=\"u-focus\" name=\"focus\" placeholder=\"101, 102\"></div>\
         <button type=\"submit\">Save</button></form>",
        csrf_field(me)
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
    pub(crate) password: String,
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
    /// Focus business ids.
    pub focus: Vec<i64>,
}

/// Longest user name (bytes).
pub const MAX_NAME_BYTES: usize = 64;

/// Shortest password (characters).
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Longest password (bytes).
pub const MAX_PASSWORD_BYTES: usize = 1024;

impl UserForm {
    /// Checks the form: a name of 1 to [`MAX_NAME_BYTES`] bytes without spaces or control
    /// characters, a role by its name, a password of [`MIN_PASSWORD_CHARS`] characters to
    /// [`MAX_PASSWORD_BYTES`] bytes, focus business ids separated by commas or spaces.
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
        if self.password.chars().count() < MIN_PASSWORD_CHARS
            || self.password.len() > MAX_PASSWORD_BYTES
        {
            return Err(PageError::BadRequest(format!(
                "password: {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} characters"
            )));
        }
        let focus: Vec<i64> = self
            .focus
            .split([',', ' '])
            .filter(|x| !x.trim().is_empty())
            .map(|x| x.trim().parse::<i64>())
            .collect::<Result<_, _>>()
            .map_err(|_| PageError::BadRequest("focus: business ids separated by commas".into()))?;
        Ok(ValidUser {
            name: name.to_string(),
            role,
            focus,
        })
    }
}

/// `POST /users`.
pub async fn save(
    State(s): State<AppState>,
    Extension(web): Extension<WebState>,
    PageAdmin(me): PageAdmin,
    Form(f): Form<UserForm>,
) -> Result<Response, PageError> {
    let ValidUser { name, role, focus } = f.check()?;
    let name = name.as_str();
    let pw = f.password;
    let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&pw))
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?
        .map_err(|e| PageError::Internal(e.to_string()))?;
    let now = s.clock.now_ms();
    // A save sets a new password (and maybe role): the catalog drops the user's tokens, and
    // its sessions end here (they would fail their credentials check on the next request).
    let id = s.catalog.put_user(name, role, &hash, now).await?;
    let sessions = web.sessions.remove_user(name);
    s.catalog
        .set_focus(
            id,
            &serde_json::to_string(&focus).unwrap_or_else(|_| "[]".into()),
        )
        .await?;
    s.catalog
        .audit(
            now,
            &me.user.name,
            "user.put",
            &serde_json::json!({"name": name, "role": role.name(), "focus": focus,
                "sessions_ended": sessions})
            .to_string(),
        )
        .await?;
    Ok(notice::redirect("/users", Notice::UserSaved, None))
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
