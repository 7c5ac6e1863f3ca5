//! Page errors: a redirect to the login page, or a small HTML page with the right status.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::{html, return_to};
use crate::catalog::CatalogError;

/// What a page handler or extractor can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    /// No session: go to the login page, and from there to `next` (the page asked for,
    /// checked by [`return_to::checked`]).
    #[error("login required")]
    Login {
        /// The page to return to after the login.
        next: Option<String>,
    },
    /// The role is too low.
    #[error("this needs the {0} role")]
    Forbidden(&'static str),
    /// A write without the session's CSRF token.
    #[error("the form is stale or forged (CSRF token missing or wrong); reload the page")]
    Csrf,
    /// Too many failed logins.
    #[error("too many failed logins; wait a minute")]
    RateLimited,
    /// Nothing there.
    #[error("not found")]
    NotFound,
    /// A bad form value.
    #[error("{0}")]
    BadRequest(String),
    /// The catalog failed.
    #[error("catalog unavailable")]
    Catalog(#[from] CatalogError),
    /// Anything else on our side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl PageError {
    /// [`PageError::Login`] with no page to return to (a write, or the overview).
    pub const LOGIN: PageError = PageError::Login { next: None };
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match &self {
            PageError::Login { next } => {
                return Redirect::to(&return_to::with_next("/login", next.as_deref()))
                    .into_response()
            }
            PageError::Forbidden(_) | PageError::Csrf => StatusCode::FORBIDDEN,
            PageError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Catalog(e) => {
                tracing::error!("catalog: {e}");
                StatusCode::SERVICE_UNAVAILABLE
            }
            PageError::Internal(e) => {
                tracing::error!("web: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = format!(
            "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">Back to the overview</a></p>",
            html::esc(&self.to_string())
        );
        (
            status,
            Html(html::layout(
                status.canonical_reason().unwrap_or("Error"),
                "",
                None,
                &body,
            )),
        )
            .into_response()
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> PageError {
        PageError::Internal(format!("template: {e}"))
    }
}
