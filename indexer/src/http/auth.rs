//! Authentication and roles as extractors. A bearer token (`Authorization: Bearer ubk_…`) is
//! looked up by its SHA-256 and refused once expired; passwords (argon2) are checked only by
//! `POST /api/v1/login` (through [`crate::auth::LoginGuard`]), which hands out a token.
//!
//! UBackup's legacy routes also take the dashboard's session cookie ([`LegacyReader`],
//! [`FocusWriter`]): UBackup's Chrome extension and its dashboard page sent nothing but the
//! browser's cookies. The `/api/v1/` routes take bearer tokens only.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::catalog::{Role, User};
use crate::web::WebState;

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

/// The user of the dashboard session the request's cookie names, when the page routes (and
/// so the session store) are mounted over these routes ([`crate::web::router`]).
async fn session_user(parts: &Parts, state: &AppState) -> Result<Option<User>, ApiError> {
    let Some(web) = parts.extensions.get::<WebState>() else {
        return Ok(None);
    };
    let s = crate::web::session::from_cookie(web, &parts.headers, state).await?;
    Ok(s.map(|s| s.user))
}

/// The bearer token's user when the request has an `Authorization` header (a bad one is
/// refused, never passed over for the cookie), else the dashboard session's.
async fn token_or_session(
    parts: &Parts,
    state: &AppState,
) -> Result<Option<(User, Via)>, ApiError> {
    if let Some(u) = user_of(parts, state).await? {
        return Ok(Some((u, Via::Token)));
    }
    Ok(session_user(parts, state).await?.map(|u| (u, Via::Session)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Token,
    Session,
}

/// A reader of UBackup's legacy routes: a bearer token's user, the logged-in dashboard user
/// (UBackup's Chrome extension sends the browser's cookies and nothing else), or anyone when
/// the config allows anonymous legacy reads.
///
/// Reads on the cookie need no more: the session cookie is SameSite=Lax, so a page on
/// another site gets it sent only by navigating the whole tab to the JSON, which it then
/// cannot read; a `fetch` or `<script src>` from it goes without the cookie.
#[derive(Debug, Clone)]
pub struct LegacyReader(pub Option<User>);

impl FromRequestParts<AppState> for LegacyReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match token_or_session(parts, state).await? {
            Some((u, _)) => Ok(LegacyReader(Some(u))),
            None if state.anonymous_legacy_reads => Ok(LegacyReader(None)),
            None => Err(ApiError::Unauthenticated),
        }
    }
}

/// Who may change a user's focus businesses through UBackup's
/// `POST /api/set_force_business`: a bearer token's user (scripts; no further rule, a token
/// is never sent by a browser on its own), or the logged-in dashboard user on a request
/// that no page on another site can make:
///
/// - `Content-Type: application/json` (any parameters). UBackup's dashboard page posted its
///   JSON so (AngularJS `$http.post`); a cross-site HTML form can send only urlencoded,
///   multipart or text/plain bodies, and a cross-site `fetch` with JSON needs a CORS
///   preflight that the indexer never grants, so the request is never sent.
/// - An `Origin`, when the browser sends one, naming this server ([`crate::web::csrf::origin_ok`]).
///
/// The session cookie being SameSite=Lax, a cross-site POST carries no session anyway; these
/// two rules hold for a browser that sends it regardless, and for a sibling site (same site,
/// other origin) that Lax does not stop. UBackup's extension never wrote: it only read.
#[derive(Debug, Clone)]
pub struct FocusWriter(pub User);

/// Whether the request says its body is JSON (`application/json`, parameters allowed).
fn json_body(parts: &Parts) -> bool {
    parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

impl FromRequestParts<AppState> for FocusWriter {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match token_or_session(parts, state).await? {
            Some((u, Via::Token)) => Ok(FocusWriter(u)),
            Some((u, Via::Session)) => {
                if !crate::web::csrf::origin_ok(&parts.headers, &parts.uri) {
                    return Err(ApiError::CrossSite("Origin is another site"));
                }
                if !json_body(parts) {
                    return Err(ApiError::CrossSite(
                        "a session write needs Content-Type: application/json",
                    ));
                }
                Ok(FocusWriter(u))
            }
            None => Err(ApiError::Unauthenticated),
        }
    }
}
