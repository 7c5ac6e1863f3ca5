//! The web dashboard: server-rendered pages on the indexer's router, with its [`AppState`],
//! its catalog and its cluster reader.
//!
//! Shape (after kanidm's `views/`): one module per page, and the cross-cutting parts apart —
//! [`cookies`] (the session cookie), [`session`] (sessions, the role
//! extractors pages take), [`csrf`] (a middleware that refuses any write without the session's
//! token), [`errors`] (HTML error pages and the redirect to the login page), [`return_to`]
//! (the page a login returns to, checked to be on this site). Handlers stay
//! thin: extract, call the catalog, render.
//!
//! Rendering is plain Rust ([`html`]): every value goes through [`html::esc`]; there is no
//! template engine to compile. Every asset (CSS, JS, the favicon) is embedded with
//! `include_str!`, so a datacenter console without Internet access gets the same page. Times
//! leave the server as epoch milliseconds in `<time data-ms>` and the browser formats them
//! in its own time zone.
//!
//! ```text
//! browser ─ cookie ubk_session ─▶ csrf::guard (writes) ─▶ session::{PageViewer,PageOperator,PageAdmin}
//!                                                        ─▶ page handler ─▶ Catalog / Clusters ─▶ html
//! ```

pub mod alerts;
pub mod assets;
pub mod chart;
pub mod cookies;
pub mod csrf;
pub mod errors;
pub mod html;
pub mod instance_edit;
pub mod instances;
pub mod login;
pub mod nodes;
pub mod notice;
pub mod overview;
pub mod return_to;
pub mod session;
pub mod stats;
pub mod users;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::http::AppState;

/// Options of the web pages (`[http]` in the config).
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Set `Secure` on the session cookie (serve behind TLS). Off only for plain-HTTP tests.
    pub secure_cookies: bool,
    /// Idle session lifetime (ms).
    pub session_idle_ms: i64,
    /// A node is shown down when its heartbeat is older than this (`alerts.node_timeout_secs`,
    /// the `node_down` rule's own limit).
    pub node_timeout_secs: i64,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            secure_cookies: true,
            session_idle_ms: 12 * 3600 * 1000,
            node_timeout_secs: 120,
        }
    }
}

/// What the pages share besides [`AppState`]: sessions (the login limiter is in
/// [`AppState::login`], shared with the API).
#[derive(Debug, Clone)]
pub struct WebState {
    /// Options.
    pub opts: Arc<WebOptions>,
    /// Sessions.
    pub sessions: Arc<session::Sessions>,
}

/// The page routes merged with `api` ([`crate::http::routes`]), then `with_state`. The
/// session store is layered over both, so a dashboard session authorizes UBackup's legacy
/// routes in `api` too ([`crate::http::auth::LegacyReader`]); the CSRF guard and the page
/// headers stay on the page routes.
pub fn router(api: Router<AppState>, opts: WebOptions) -> Router<AppState> {
    let web = WebState {
        sessions: Arc::new(session::Sessions::new(&opts)),
        opts: Arc::new(opts),
    };
    let pages = Router::new()
        .route("/", get(overview::page))
        .route("/login", get(login::form).post(login::submit))
        .route("/login/check", get(login::check))
        .route("/logout", post(login::logout))
        .route("/logout/everywhere", post(login::logout_everywhere))
        .route("/stats", get(stats::page))
        .route("/alerts", get(alerts::list))
        .route("/alerts/feed", get(alerts::feed))
        .route("/alerts/bulk", post(alerts::bulk))
        .route("/alerts/samples", get(alerts::samples))
        .route("/alerts/silences", get(alerts::silences))
        .route("/alerts/silences/cancel", post(alerts::cancel_silence))
        .route("/alerts/{id}", get(alerts::detail))
        .route("/alerts/{id}/ack", post(alerts::ack))
        .route("/alerts/{id}/silence", post(alerts::silence))
        .route("/instances", get(instances::list).post(instance_edit::save))
        .route("/instances/batch", post(instance_edit::batch_add))
        .route("/instances/delete", post(instances::batch_delete))
        .route(
            "/instances/{server_id}/{type}/{instance}",
            get(instances::history),
        )
        .route(
            "/businesses",
            get(instances::businesses).post(instances::save_business),
        )
        .route("/types", get(instances::types).post(instances::save_type))
        .route("/nodes", get(nodes::page))
        .route("/nodes/control", post(nodes::control))
        .route("/users", get(users::page).post(users::save))
        .route("/users/delete", post(users::delete))
        .route("/users/focus", post(users::own_focus))
        .route("/users/token", post(users::token))
        .route("/users/tokens", post(users::create_token))
        .route("/users/tokens/revoke", post(users::revoke_token))
        .route("/static/{name}", get(assets::serve))
        .layer(axum::middleware::from_fn(csrf::guard))
        .layer(axum::middleware::from_fn(server_timing));
    api.merge(pages).layer(Extension(web))
}

/// Adds `Server-Timing: app;dur=<ms>` (the page's server time, readable in the browser's
/// Navigation Timing) and `Cache-Control: no-store` on pages.
async fn server_timing(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let t = std::time::Instant::now();
    let is_asset = req.uri().path().starts_with("/static/");
    let mut r = next.run(req).await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("app;dur={ms:.1}")) {
        r.headers_mut().insert("server-timing", v);
    }
    if !is_asset {
        r.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
        r.headers_mut().insert(
            "x-frame-options",
            axum::http::HeaderValue::from_static("DENY"),
        );
        r.headers_mut().insert(
            "content-security-policy",
            axum::http::HeaderValue::from_static(
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        );
    }
    r
}
