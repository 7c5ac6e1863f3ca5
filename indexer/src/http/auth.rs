//! Authentication and roles as extractors. A bearer token (`Authorization: Bearer ubk_…`) is
//! looked up by its SHA-256 and refused once expired; passwords (argon2) are checked only by
//! `POST /api/v1/login` (through [`crate::auth::LoginGuard`]), which hands out a token.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::catalog::{Role, User};

async fn user_of(parts: &Parts, state: &AppState) -> Result<Option<User>, ApiError> {
    let Some(h) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let h = h.to_str().map_err(|_| ApiError::Unauthenticated)?;
    let token = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .ok_or(ApiError::Unauthenticated)?
        .trim();
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::Unauthenticated);
    }
    let user = state
        .catalog
        .user_by_token(&crate::auth::token_hash(token), state.clock.now_ms())
        .await?;
    user.map(Some).ok_or(ApiError::Unauthenticated)
}

async fn require(parts: &Parts, state: &AppState, role: Role) -> Result<User, ApiError> {
    let user = user_of(parts, state)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    if user.role < role {
        return Err(ApiError::Forbidden(role.name()));
    }
    Ok(user)
}

macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name(pub User);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                require(parts, state, $role).await.map($name)
            }
        }
    };
}

role_extractor!(
    Viewer,
    Role::Viewer,
    "A user with at least the viewer role (reads)."
);
role_extractor!(
    Operator,
    Role::Operator,
    "A user with at least the operator role (acknowledge, silence, registry writes)."
);
role_extractor!(Admin, Role::Admin, "An admin (users, audit log).");

/// A reader of UBackup's legacy routes: a viewer, or anyone when the config allows anonymous
/// legacy reads (UBackup's Chrome extension sends no credentials).
#[derive(Debug, Clone)]
pub struct LegacyReader(pub Option<User>);

impl FromRequestParts<AppState> for LegacyReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match user_of(parts, state).await {
            Ok(Some(u)) => Ok(LegacyReader(Some(u))),
            Ok(None) if state.anonymous_legacy_reads => Ok(LegacyReader(None)),
            Ok(None) => Err(ApiError::Unauthenticated),
            Err(e) => Err(e),
        }
    }
}
