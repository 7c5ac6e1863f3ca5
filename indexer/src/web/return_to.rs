//! Where a login returns to: the page a logged-out request asked for, carried as
//! `/login?next=<path>` through the login form (a hidden field) and the cookie check
//! (`/login/check?next=<path>`) to the final redirect.
//!
//! `next` comes back from the browser, so anyone can write a link with their own: it is a
//! redirect target only when [`checked`] accepts it as a path on this site. Everything else
//! (another host, a scheme, `//host`, `/\host`, control characters, anything over
//! [`MAX_NEXT_BYTES`]) sends the user to the overview instead. It is checked again at each
//! step, never trusted for having been checked before.

use axum::http::{Method, Uri};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Longest `next` kept (bytes): a dashboard URL with its filters is well under it.
pub const MAX_NEXT_BYTES: usize = 2048;

/// What stays as it is in `next=`: the unreserved characters and `/`, so the login URL reads
/// `/login?next=/alerts/123%3Fx`. Everything else is encoded, `%`, `+`, `&` and `?` included,
/// so the query decodes back to the exact path.
const NEXT_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// `next` when it is a path on this site, else None.
///
/// Accepted: it starts with one `/` that is not followed by `/` or `\` (either would make the
/// browser read a host: `//evil.example`, `/\evil.example`), and holds only printable ASCII
/// without `\` (a browser takes `\` for `/` in URLs; tabs and line breaks it drops, so
/// `/\t/evil.example` is `//evil.example`). Starting with `/` also rules out a scheme
/// (`javascript:`, `https:`). Browsers send non-ASCII paths percent-encoded, so a real page
/// never fails the ASCII rule, and an ASCII-only value is always a valid `Location`.
pub fn checked(next: &str) -> Option<&str> {
    let b = next.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_NEXT_BYTES
        && b[0] == b'/'
        && !matches!(b.get(1), Some(b'/' | b'\\'))
        && b.iter().all(|&c| c.is_ascii_graphic() && c != b'\\');
    ok.then_some(next)
}

/// `next` when present and accepted by [`checked`].
pub fn checked_opt(next: Option<&str>) -> Option<&str> {
    next.and_then(checked)
}

/// The page a logged-out request asked for, worth returning to: a GET (or HEAD) of a path
/// [`checked`] accepts, other than the overview (where a login goes anyway).
pub fn of_request(method: &Method, uri: &Uri) -> Option<String> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let pq = uri.path_and_query()?.as_str();
    checked(pq).filter(|p| *p != "/").map(str::to_string)
}

/// `base` with `?next=<encoded>` when `next` is accepted, else `base` alone.
pub fn with_next(base: &str, next: Option<&str>) -> String {
    match checked_opt(next) {
        Some(n) => format!("{base}?next={}", utf8_percent_encode(n, NEXT_VALUE)),
        None => base.to_string(),
    }
}

/// Where a successful login ends: `next` when accepted, else the overview.
pub fn target(next: Option<&str>) -> &str {
    checked_opt(next).unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_paths_on_this_site() {
        for p in [
            "/",
            "/alerts/123",
            "/alerts/123?x",
            "/alerts?rule=overdue&page=2",
            "/instances/S1/mysql/3306",
            "/a%2F%2Fb",
            "/%2F%2Fevil.example",
            "/.//evil.example",
            "/alerts?q=a+b%26c",
        ] {
            assert_eq!(checked(p), Some(p), "{p:?}");
        }
    }

    #[test]
    fn refuses_hostile_targets() {
        let long = format!("/{}", "a".repeat(MAX_NEXT_BYTES));
        for p in [
            "",
            "//evil.example",
            "//evil.example/alerts",
            "///evil.example",
            "/\\evil.example",
            "/\\/evil.example",
            "\\\\evil.example",
            "https://evil.example/",
            "http:/evil.example",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "evil.example",
            "alerts/1",
            " /alerts",
            "/alerts 1",
            "/\t/evil.example",
            "/\n/evil.example",
            "/alerts\r\nSet-Cookie: x=1",
            "/alerts\0",
            "/alerts\u{7f}",
            "/ａlerts",
            "/alerts\u{2028}",
            "/a\\b",
            "@evil.example",
            "?next=//evil.example",
            "#//evil.example",
            long.as_str(),
        ] {
            assert_eq!(checked(p), None, "{p:?}");
            assert_eq!(target(Some(p)), "/", "{p:?}");
            assert_eq!(with_next("/login", Some(p)), "/login", "{p:?}");
        }
        assert_eq!(target(None), "/");
        let edge = format!("/{}", "a".repeat(MAX_NEXT_BYTES - 1));
        assert_eq!(checked(&edge).map(str::len), Some(MAX_NEXT_BYTES));
    }

    #[test]
    fn the_login_url_decodes_back_to_the_exact_path() {
        let p = "/alerts/123?x=a+b&y=%2F&z=~_.-";
        let url = with_next("/login", Some(p));
        assert_eq!(
            url,
            "/login?next=/alerts/123%3Fx%3Da%2Bb%26y%3D%252F%26z%3D~_.-"
        );
        let q = url.split_once('?').map(|x| x.1).unwrap_or_default();
        let back: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap_or_default();
        assert_eq!(back, vec![("next".to_string(), p.to_string())]);
        assert_eq!(
            with_next("/login", Some("/alerts/123?x")),
            "/login?next=/alerts/123%3Fx"
        );
    }

    #[test]
    fn only_a_get_of_a_page_is_returned_to() {
        let u: Uri = "/alerts/7?state=open".parse().unwrap_or_default();
        assert_eq!(
            of_request(&Method::GET, &u).as_deref(),
            Some("/alerts/7?state=open")
        );
        assert_eq!(of_request(&Method::POST, &u), None);
        assert_eq!(of_request(&Method::GET, &Uri::from_static("/")), None);
        let abs: Uri = "http://evil.example//x".parse().unwrap_or_default();
        assert_eq!(of_request(&Method::GET, &abs), None);
    }
}
