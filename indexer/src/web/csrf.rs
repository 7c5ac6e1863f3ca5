//! CSRF: every write (any method but GET/HEAD) to a page route carries the session's token,
//! in a `csrf` form field or an `X-CSRF-Token` header, or is refused with 403 before any
//! handler runs. The token is random per session and compared in constant time. A write whose
//! `Origin` names another origin is refused before that, token or not. The login form, which
//! has no session yet, is covered by the Origin check alone (a cross-site form cannot log a
//! victim into the attacker's account).
//!
//! The session cookie is SameSite=Lax ([`super::cookies`]): a browser sends it cross-site only
//! on top-level GET navigations (a link followed from chat or mail), never on a cross-site
//! POST, `fetch` or frame. So a forged write from another site arrives without a session, and
//! the token and the Origin check are what refuse it should a browser or a same-site page
//! send one anyway. This holds because no GET route writes: a GET that changed something
//! would be reachable from any link. UBackup's `POST /api/set_force_business` is not a page
//! route; its rule is [`crate::http::legacy::set_force_business`]'s.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::errors::PageError;
use super::{cookies, WebState};

/// Largest form body (batch add of 20,000 lines fits).
pub const MAX_FORM_BYTES: usize = 8 << 20;

/// Constant-time equality.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `csrf` field of a urlencoded body.
pub fn field(body: &[u8]) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v)
}

/// Whether the request's `Origin`, when it has one, is this server's own (the scheme aside:
/// behind a TLS proxy the indexer sees plain HTTP). A request without `Origin` passes.
pub fn origin_ok(headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    // HTTP/2 carries no Host header: the authority is in the URI (`:authority`).
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
    else {
        return false;
    };
    let o = origin.to_str().unwrap_or("");
    o == format!("http://{host}") || o == format!("https://{host}")
}

/// The middleware.
pub async fn guard(Extension(web): Extension<WebState>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    if !origin_ok(req.headers(), req.uri()) {
        return PageError::Csrf.into_response();
    }
    if req.uri().path() == "/login" {
        return next.run(req).await;
    }
    let Some(id) = cookies::session_id(req.headers()) else {
        return PageError::LOGIN.into_response();
    };
    let now = super::session::wall_ms();
    let Some((_, expected)) = web.sessions.get(&id, now) else {
        return PageError::LOGIN.into_response();
    };
    let header_token = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
        return PageError::BadRequest("form too large".into()).into_response();
    };
    let given = header_token.or_else(|| field(&bytes));
    match given {
        Some(t) if same(&t, &expected) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        _ => PageError::Csrf.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_field_and_compares_exactly() {
        assert_eq!(field(b"a=1&csrf=ab%20c").as_deref(), Some("ab c"));
        assert_eq!(field(b"a=1"), None);
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
