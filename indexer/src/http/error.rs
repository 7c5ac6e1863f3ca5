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
    /// The catalog failed.
    #[error("catalog unavailable")]
    Catalog(#[from] CatalogError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Catalog(e) => {
                tracing::error!("catalog: {e}");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let mut r = (status, Json(serde_json::json!({"error": self.to_string()}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}
