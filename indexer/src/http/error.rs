//! API errors as JSON with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::catalog::CatalogError;

/// What a handler or extractor can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No or unknown credentials.
    #[error("authentication required")]
    Unauthenticated,
    /// Authenticated, but the role is too low.
    #[error("needs role {0}")]
    Forbidden(&'static str),
    /// Nothing there.
    #[error("not found")]
    NotFound,
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Too many failed logins: wait this many seconds.
    #[error("too many failed logins; retry after {0} s")]
    RateLimited(u64),
    /// Every password-hash worker is busy: retry after this many seconds.
    #[error("login busy; retry after {0} s")]
    Busy(u64),
    /// A write on a session cookie that a page on another site could have made.
    #[error("refused as a possible cross-site request: {0}")]
    CrossSite(&'static str),
    /// The catalog failed.
    #[error("catalog unavailable")]
    Catalog(#[from] CatalogError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::CrossSite(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Catalog(e) => {
                tracing::error!("catalog: {e}");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let retry = match &self {
            ApiError::RateLimited(s) | ApiError::Busy(s) => Some(*s),
            _ => None,
        };
        let mut r = (status, Json(serde_json::json!({"error": self.to_string()}))).into_response();
        if let Some(s) = retry {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(s),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}
