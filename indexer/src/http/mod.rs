//! The HTTP API (axum): JSON under `/api/v1/`, UBackup's routes under `/api/` with their old
//! shapes, and `/metrics`.
//!
//! Handlers are thin: extract, call the catalog or a domain function, render. Authentication
//! and roles are extractors ([`auth::Viewer`], [`auth::Operator`], [`auth::Admin`],
//! [`auth::LegacyReader`], [`auth::FocusWriter`]); a handler that takes one cannot run
//! without it. The dashboard's pages go on the same [`Router`] with the same [`AppState`]:
//! `web::router(routes(), options)` before `with_state`, which also lets a dashboard session
//! authorize UBackup's legacy routes.

pub mod api;
pub mod auth;
pub mod edge;
pub mod error;
pub mod legacy;
pub mod tls;
pub mod tokens;

use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::Router;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::cluster::Clusters;
use crate::metrics::Metrics;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The catalog.
    pub catalog: Arc<dyn Catalog>,
    /// The clusters' Redis.
    pub clusters: Arc<Clusters>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Whether UBackup's legacy GET routes answer without a token.
    pub anonymous_legacy_reads: bool,
    /// The login check the web form and `POST /api/v1/login` share.
    pub login: Arc<crate::auth::LoginGuard>,
}

/// Largest request body accepted (registry uploads included).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// The routes, without state (`crate::web::router` adds the pages before `with_state`).
pub fn routes() -> Router<AppState> {
    Router::new()
        // JSON API.
        .route("/api/v1/login", post(api::login))
        .route(
            "/api/v1/instances",
            get(api::instances).post(api::put_instances),
        )
        .route(
            "/api/v1/instances/{server_id}/{type}/{instance}",
            delete(api::delete_instance),
        )
        .route(
            "/api/v1/instances/{server_id}/{type}/{instance}/backups",
            get(api::history),
        )
        .route(
            "/api/v1/instances/{server_id}/{type}/{instance}/restore",
            get(api::restore_plan),
        )
        .route("/api/v1/backups/{id}", get(api::backup))
        .route(
            "/api/v1/businesses",
            get(api::businesses).post(api::put_businesses),
        )
        .route(
            "/api/v1/backup_types",
            get(api::backup_types).post(api::put_backup_types),
        )
        .route("/api/v1/stats", get(api::stats))
        .route("/api/v1/clusters", get(api::clusters))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/alerts/{id}/ack", post(api::ack))
        .route("/api/v1/alerts/{id}/silence", post(api::silence))
        .route("/api/v1/audit", get(api::audit))
        .route("/api/v1/tokens", get(tokens::list))
        .route("/api/v1/tokens/{id}", delete(tokens::revoke))
        // UBackup's routes, old shapes.
        .route("/api/alert", get(legacy::alert))
        .route("/api/get_force_business", get(legacy::get_force_business))
        .route("/api/set_force_business", post(legacy::set_force_business))
        .route("/api/get_backup_list", get(legacy::get_backup_list))
        .route("/api/business", get(legacy::business))
        .route("/metrics", get(api::metrics))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// `/metrics` alone, for `http.metrics_listen`.
pub fn metrics_routes() -> Router<AppState> {
    Router::new().route("/metrics", get(api::metrics))
}

/// The whole app.
pub fn router(state: AppState) -> Router {
    routes().with_state(state)
}

/// Serves `router` on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Peer addresses reach handlers (the web login's rate limit keys on them).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    })
    .await
}
