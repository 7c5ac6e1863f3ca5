//! Users (admins): add a user or change its role and password, set focus businesses, issue
//! an API token (shown once), revoke a user's tokens, end its sessions.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::errors::PageError;
use super::html::{csrf_field, esc, layout, thead, url};
use super::session::PageAdmin;
use super::WebState;
use crate::catalog::Role;
use crate::http::AppState;

/// Page query.
#[derive(Debug, Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    pub(crate) done: String,
}

/// `GET /users`.
pub async fn page(
    State(s): State<AppState>,
    PageAdmin(me): PageAdmin,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, PageError> {
    let users = s.catalog.users().await?;
    let mut o = String::new();
    if !q.done.is_empty() {
        let _ = write!(
            o,
            "<p class=\"notice\" role=\"status\" id=\"done\">{}</p>",
            esc(&q.done)
        );
    }
    o.push_str("<div class=\"scroll\"><table id=\"users\">");
    o.push_str(&thead(&[
        "Name",
        "Role",
        "Focus businesses",
        "API tokens",
        "Actions",
    ]));
    o.push_str("<tbody>");
    for (u, tokens) in &users {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"num\">{tokens}</td><td>\
             <form method=\"post\" action=\"/users/token\" class=\"inline\">{c}<input type=\"hidden\" name=\"name\" value=\"{n}\">\
             <button type=\"submit\" name=\"op\" value=\"issue\" class=\"secondary\">New token</button>\
             <button type=\"submit\" name=\"op\" value=\"revoke\" class=\"secondary\">Revoke tokens</button>\
             <button type=\"submit\" name=\"op\" value=\"logout\" class=\"secondary\">End sessions</button></form></td></tr>",
            esc(&u.name),
            u.role.name(),
            esc(&u.focus_business),
            c = csrf_field(&me),
            n = esc(&u.name),
        );
    }
    o.push_str("</tbody></table></div>");
    let _ = write!(
        o,
        "<form method=\"post\" action=\"/users\" class=\"card filters\" id=\"user-form\"><h2>Add a user, or change one</h2>{}\
         <div><label for=\"u-name\">Name</label><input id=\"u-name\" name=\"name\" required maxlength=\"64\" autocomplete=\"off\"></div>\
         <div><label for=\"u-role\">Role</label><select id=\"u-role\" name=\"role\"><option>viewer</option><option>operator</option><option>admin</option></select></div>\
         <div><label for=\"u-pw\">Password (12+ characters)</label><input id=\"u-pw\" name=\"password\" type=\"password\" minlength=\"12\" required autocomplete=\"new-password\"></div>\
         <div><label for=\"u-focus\">Focus business ids</label><input id=\"u-focus\" name=\"focus\" placeholder=\"101, 102\"></div>\
         <button type=\"submit\">Save</button></form>",
        csrf_field(&me)
    );
    Ok(Html(layout("Users", "/users", Some(&me), &o)))
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
    let id = s.catalog.put_user(name, role, &hash, now).await?;
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
            &serde_json::json!({"name": name, "role": role.name(), "focus": focus}).to_string(),
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/users?done={}",
        url(&format!("Saved {name} ({}).", role.name()))
    ))
    .into_response())
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

/// `POST /users/token`: issue (shown once), revoke all, or end sessions.
pub async fn token(
    State(s): State<AppState>,
    Extension(web): Extension<WebState>,
    PageAdmin(me): PageAdmin,
    Form(f): Form<TokenForm>,
) -> Result<Response, PageError> {
    let u = s.catalog.user(&f.name).await?.ok_or(PageError::NotFound)?;
    let now = s.clock.now_ms();
    let body = match TokenOp::parse(&f.op) {
        Some(TokenOp::Issue) => {
            let t = crate::auth::new_token();
            s.catalog
                .add_token(u.id, &crate::auth::token_hash(&t), now)
                .await?;
            s.catalog
                .audit(
                    now,
                    &me.user.name,
                    "token.issue",
                    &serde_json::json!({"user": u.name}).to_string(),
                )
                .await?;
            format!(
                "<p>New API token for <b>{}</b>. It is shown only now:</p><div class=\"copy\"><code id=\"token\">{}</code>\
                 <button type=\"button\" data-copy=\"token\">Copy</button></div><p><a href=\"/users\">Back to users</a></p>",
                esc(&u.name),
                esc(&t)
            )
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
            return Ok(Redirect::to(&format!(
                "/users?done={}",
                url(&format!("Revoked {n} tokens of {}.", u.name))
            ))
            .into_response());
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
            return Ok(Redirect::to(&format!(
                "/users?done={}",
                url(&format!("Ended {n} sessions of {}.", u.name))
            ))
            .into_response());
        }
        None => return Err(PageError::BadRequest("unknown operation".into())),
    };
    Ok(Html(layout("API token", "/users", Some(&me), &body)).into_response())
}
