//! Log in (through [`crate::auth::LoginGuard`], the limiter and hashing pool the API login
//! shares), log out, and log out everywhere.
//!
//! A login returns to the page asked for: `/login?next=/alerts/123` keeps `next` in a hidden
//! field, a successful login passes it through the cookie check, and the check redirects
//! there. [`return_to::checked`] vets `next` at every step; a value it refuses is dropped
//! and the login ends on the overview.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::errors::PageError;
use super::html::{esc, layout};
use super::session::{wall_ms, PageViewer, PeerAddr};
use super::{cookies, return_to, WebState};
use crate::auth::LoginOutcome;
use crate::http::AppState;

fn form_html(name: &str, error: Option<&str>, next: Option<&str>) -> String {
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
             {}<button type=\"submit\" id=\"login\">Log in</button></form>",
            esc(name),
            return_to::checked_opt(next)
                .map(|n| format!(
                    "<input type=\"hidden\" name=\"next\" id=\"next\" value=\"{}\">",
                    esc(n)
                ))
                .unwrap_or_default()
        ),
    )
}

/// The first `next` of a query string (`/login?next=`, `/login/check?next=`), unchecked. A
/// query that does not decode is no `next`, not an error page.
pub fn next_param(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
}

/// `GET /login[?next=<path>]`.
pub async fn form(RawQuery(q): RawQuery) -> Html<String> {
    Html(form_html("", None, next_param(q.as_deref()).as_deref()))
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    pub(crate) name: String,
    pub(crate) password: String,
    /// The page to return to (hidden field), checked before use.
    #[serde(default)]
    pub(crate) next: Option<String>,
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

/// `POST /login`: the check is [`crate::auth::LoginGuard`], shared with the API.
pub async fn submit(
    State(s): State<AppState>,
    Extension(web): Extension<WebState>,
    PeerAddr(peer): PeerAddr,
    Form(f): Form<LoginForm>,
) -> Result<Response, PageError> {
    f.check_lengths()?;
    let now = wall_ms();
    let outcome = s
        .login
        .verify(&*s.catalog, &f.name, &f.password, peer.map(|p| p.ip()), now)
        .await?;
    let (status, retry, message) = match outcome {
        LoginOutcome::Verified(user) => {
            let id = web.sessions.create(&user, now);
            s.catalog.audit(now, &user.name, "web.login", "{}").await?;
            // Through the cookie check: a browser that dropped the cookie gets told why
            // instead of an empty login form.
            let to = return_to::with_next(COOKIE_CHECK, f.next.as_deref());
            let mut r = Redirect::to(&to).into_response();
            cookies::add(
                r.headers_mut(),
                cookies::set(
                    &id,
                    web.opts.secure_cookies,
                    web.opts.session_idle_ms / 1000,
                ),
            );
            return Ok(r);
        }
        LoginOutcome::Wrong => {
            let _ = s
                .catalog
                .audit(now, &f.name, "web.login_failed", "{}")
                .await;
            (
                StatusCode::UNAUTHORIZED,
                None,
                "Wrong user name or password.".to_string(),
            )
        }
        LoginOutcome::Limited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            Some(retry_after_secs),
            format!(
                "{} Try again in {retry_after_secs} s.",
                PageError::RateLimited
            ),
        ),
        LoginOutcome::Busy { retry_after_secs } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(retry_after_secs),
            format!("The server is busy. Try again in {retry_after_secs} s."),
        ),
    };
    let mut r = (
        status,
        Html(form_html(&f.name, Some(&message), f.next.as_deref())),
    )
        .into_response();
    if let Some(secs) = retry {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Ok(r)
}

/// Where a successful login goes first.
pub const COOKIE_CHECK: &str = "/login/check";

/// What the login page says when the browser did not keep the session cookie.
pub const COOKIE_DROPPED: &str = "Your password was accepted, but your browser did not keep \
    the session cookie. The cookie is marked Secure (HTTPS only) and this page was loaded \
    over plain HTTP, so the browser refused it. Open the dashboard over https:// (the \
    indexer's http.tls_cert and http.tls_key, or a TLS proxy in front of it).";

/// `GET /login/check[?next=<path>]`: on to `next` (when [`return_to::checked`] accepts it,
/// else the overview) when the browser sent the new session cookie back, else the login form
/// with [`COOKIE_DROPPED`].
pub async fn check(
    Extension(web): Extension<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let next = next_param(q.as_deref());
    let has_session =
        cookies::session_id(&headers).is_some_and(|id| web.sessions.get(&id, wall_ms()).is_some());
    if has_session {
        return Redirect::to(return_to::target(next.as_deref())).into_response();
    }
    (
        StatusCode::BAD_REQUEST,
        Html(form_html("", Some(COOKIE_DROPPED), next.as_deref())),
    )
        .into_response()
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
