//! What every request and response on the main listener passes through, pages and API alike:
//! the `Host` allow-list (a DNS-rebinding page cannot reach `/login` or `/metrics` under its
//! own name), the access rule for `/metrics`, and the headers every answer carries
//! (`X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`). The pages add their own
//! CSP with `frame-ancestors 'none'` (`web::server_timing`).
//!
//! `Referrer-Policy` is `same-origin`, not `no-referrer`: with `no-referrer` a browser sends
//! `Origin: null` on form posts, which the CSRF check rightly refuses.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

/// Who may read `/metrics` on the main listener.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Anyone who can reach the listener (the default, as before).
    #[default]
    Open,
    /// Only a request with `Authorization: Bearer <token>`.
    Token(String),
    /// Nobody: `/metrics` is served on its own listen address.
    Elsewhere,
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAccess::Open => f.write_str("Open"),
            MetricsAccess::Token(_) => f.write_str("Token(***)"),
            MetricsAccess::Elsewhere => f.write_str("Elsewhere"),
        }
    }
}

/// The edge rules.
#[derive(Debug, Clone, Default)]
pub struct EdgeOptions {
    /// Lower-case host names (no port) a request may name; empty: any.
    pub allowed_hosts: Vec<String>,
    /// `/metrics` on this listener.
    pub metrics: MetricsAccess,
}

/// The host name a request names (`Host`, else the URI authority HTTP/2 carries), lower-case,
/// without the port or an IPv6 literal's brackets.
pub fn request_host(req: &Request) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split_once(']').map(|(h, _)| h)?
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn guard(opts: Arc<EdgeOptions>, req: Request, next: Next) -> Response {
    let mut r = if !opts.allowed_hosts.is_empty()
        && !request_host(&req).is_some_and(|h| opts.allowed_hosts.contains(&h))
    {
        plain(
            StatusCode::MISDIRECTED_REQUEST,
            "This host name is not served here (http.allowed_hosts).\n",
        )
    } else if req.uri().path() == "/metrics" {
        match &opts.metrics {
            MetricsAccess::Open => next.run(req).await,
            MetricsAccess::Elsewhere => plain(StatusCode::NOT_FOUND, "Not found.\n"),
            MetricsAccess::Token(t) => {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|h| h.to_str().ok())
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .unwrap_or("");
                if same_secret(given.as_bytes(), t.as_bytes()) {
                    next.run(req).await
                } else {
                    let mut r = plain(StatusCode::UNAUTHORIZED, "A bearer token is required.\n");
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"metrics\""),
                    );
                    r
                }
            }
        }
    } else {
        next.run(req).await
    };
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// `app` behind the edge rules.
pub fn wrap(app: Router, opts: EdgeOptions) -> Router {
    let opts = Arc::new(opts);
    app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| guard(opts.clone(), req, next),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(h: &str) -> Option<String> {
        let req = Request::builder()
            .uri("/")
            .header(header::HOST, h)
            .body(axum::body::Body::empty())
            .ok()?;
        request_host(&req)
    }

    #[test]
    fn host_names_lose_port_brackets_and_case() {
        assert_eq!(
            host_of("Backup.Example.COM:8443").as_deref(),
            Some("backup.example.com")
        );
        assert_eq!(
            host_of("backup.example.com.").as_deref(),
            Some("backup.example.com")
        );
        assert_eq!(host_of("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(host_of("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
