//! `GET /api/v1/tokens` and `DELETE /api/v1/tokens/{id}`: a user lists and revokes their own
//! API tokens (name, created, expiry, last use; never the secret); an admin lists everyone's
//! with `?all=true` and revokes any. Another user's token is 404 to a non-admin.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Viewer;
use super::error::ApiError;
use super::AppState;
use crate::catalog::Role;

/// `GET /api/v1/tokens` query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Every user's tokens (admins).
    #[serde(default)]
    all: bool,
}

/// The caller's live tokens, newest first (an admin with `all`: everyone's).
pub async fn list(
    State(s): State<AppState>,
    Viewer(u): Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.all && u.role < Role::Admin {
        return Err(ApiError::Forbidden(Role::Admin.name()));
    }
    let owner = (!q.all).then_some(u.id);
    let tokens = s.catalog.tokens(owner, s.clock.now_ms()).await?;
    Ok(Json(json!({ "tokens": tokens })))
}

/// Revokes one token: the caller's own, or (an admin) anyone's. Requests with it get 401
/// from then on.
pub async fn revoke(
    State(s): State<AppState>,
    Viewer(u): Viewer,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let owner = (u.role < Role::Admin).then_some(u.id);
    let t = s
        .catalog
        .revoke_token(id, owner)
        .await?
        .ok_or(ApiError::NotFound)?;
    s.catalog
        .audit(
            s.clock.now_ms(),
            &u.name,
            "token.revoke",
            &json!({"user": t.user, "id": t.id, "name": t.name}).to_string(),
        )
        .await?;
    Ok(Json(
        json!({"revoked": t.id, "name": t.name, "user": t.user}),
    ))
}
