//! Log in (argon2 hash from the catalog, rate-limited per client address and per name), log
//! out, and log out everywhere.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::errors::PageError;
use super::html::{esc, layout};
use super::session::{wall_ms, PageViewer, PeerAddr};
use super::{cookies, WebState};
use crate::http::AppState;

fn form_html(name: &str, error: Option<&str>) -> String {
    let err = error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default();
    layout(
        "Log in",
        "",
        None,
        &format!(
            "<form method=\"post\" action=\"/login\" class=\"login card\">{err}\
             <label for=\"name\">User name</label>\
             <input id=\"name\" name=\"name\" autocomplete=\"username\" required autofocus value=\"{}\">\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\" id=\"login\">Log in</button></form>",
            esc(name)
        ),
    )
}

/// `GET /login`.
pub async fn form() -> Html<String> {
    Html(form_html("", None))
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    pub(crate) name: String,
    pub(crate) password: String,
}

/// Longest name a login attempt may give (bytes).
pub const MAX_LOGIN_NAME_BYTES: usize = 256;

/// Longest password a login attempt may give (bytes).
pub const MAX_LOGIN_PASSWORD_BYTES: usize = 1024;

impl LoginForm {
    /// Refuses a name over [`MAX_LOGIN_NAME_BYTES`] or a password over
    /// [`MAX_LOGIN_PASSWORD_BYTES`] before any hash is computed.
    pub fn check_lengths(&self) -> Result<(), PageError> {
        if self.name.len() > MAX_LOGIN_NAME_BYTES || self.password.len() > MAX_LOGIN_PASSWORD_BYTES
        {
            return Err(PageError::BadRequest("name or password too long".into()));
        }
        Ok(())
    }
}

fn client(headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    // The peer address; a proxy in front is one address for everyone, so the per-name limit
    // is what protects an account there.
    let _ = headers;
    peer.map(|p| p.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `POST /login`.
pub async fn submit(
    State(s): State<AppState>,
    Extension(web): Extension<WebState>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, PageError> {
    let now = wall_ms();
    let ip_key = format!("ip:{}", client(&headers, peer));
    let name_key = format!("name:{}", f.name);
    if !web.sessions.login_allowed(&ip_key, now) || !web.sessions.login_allowed(&name_key, now) {
        return Ok((
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            Html(form_html(
                &f.name,
                Some(&PageError::RateLimited.to_string()),
            )),
        )
            .into_response());
    }
    f.check_lengths()?;
    let user = s.catalog.user(&f.name).await?;
    // Verify against a fixed hash when the user is unknown, so timing does not tell names.
    let phc = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(dummy_hash);
    let password = f.password;
    let ok = tokio::task::spawn_blocking(move || crate::auth::verify_password(&password, &phc))
        .await
        .unwrap_or(false);
    let user = match user {
        Some(u) if ok => u,
        _ => {
            web.sessions.login_failed(&ip_key, now);
            web.sessions.login_failed(&name_key, now);
            let _ = s
                .catalog
                .audit(now, &f.name, "web.login_failed", "{}")
                .await;
            return Ok((
                axum::http::StatusCode::UNAUTHORIZED,
                Html(form_html(&f.name, Some("Wrong user name or password."))),
            )
                .into_response());
        }
    };
    let id = web.sessions.create(&user.name, now);
    s.catalog.audit(now, &user.name, "web.login", "{}").await?;
    let mut r = Redirect::to("/").into_response();
    cookies::add(
        r.headers_mut(),
        cookies::set(
            &id,
            web.opts.secure_cookies,
            web.opts.session_idle_ms / 1000,
        ),
    );
    Ok(r)
}

/// An argon2id hash of a random password, verified against when the name is unknown.
fn dummy_hash() -> String {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| crate::auth::hash_password(&crate::auth::new_token()).unwrap_or_default())
        .clone()
}

/// `POST /logout`: ends this session.
pub async fn logout(Extension(web): Extension<WebState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookies::session_id(&headers) {
        web.sessions.remove(&id);
    }
    let mut r = Redirect::to("/login").into_response();
    cookies::add(r.headers_mut(), cookies::clear(web.opts.secure_cookies));
    r
}

/// `POST /logout/everywhere`: ends every session of this user.
pub async fn logout_everywhere(
    State(s): State<AppState>,
    Extension(web): Extension<WebState>,
    PageViewer(v): PageViewer,
) -> Result<Response, PageError> {
    let n = web.sessions.remove_user(&v.user.name);
    s.catalog
        .audit(
            wall_ms(),
            &v.user.name,
            "web.logout_everywhere",
            &serde_json::json!({ "sessions": n }).to_string(),
        )
        .await?;
    let mut r = Redirect::to("/login").into_response();
    cookies::add(r.headers_mut(), cookies::clear(web.opts.secure_cookies));
    Ok(r)
}
